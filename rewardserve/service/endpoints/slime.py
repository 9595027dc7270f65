"""`POST /slime`: slime's remote reward model (`--rm-type remote_rm --rm-url
http://HOST:PORT/slime`). slime posts one `{"prompt", "response", "label"}` per sample and takes
the JSON body as the reward, so the answer is a bare number. `/slime/details` answers a dict
instead, `{"reward": r, ...}` with a model's objectives and step statistics: give slime
`--reward-key reward` with it.

The prompt is text in the policy's chat template (parsed back to messages with the response,
retemplate.py, and rendered with the model's template), or a list of messages. `label` is
accepted and unused: a reward model needs none.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rewardserve.scoring.schemas import Messages, ModelName, Text
from rewardserve.scoring.validate import Input, Inputs, Validate, candidate, labelled, text_format_of
from rewardserve.service.endpoints.base import Answer, Endpoint


class SlimeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # what later slime versions add must not fail a run
    prompt: Text | Messages = Field(
        description="The prompt as the policy saw it: text in its chat template, or chat messages."
    )
    response: Text = Field(description="The policy's response.")
    label: Any = Field(
        None, description="The sample's label: a composed reward's rules read it (the reference answer)."
    )
    model: ModelName = None


class Slime(Endpoint[SlimeRequest]):
    """slime's remote reward model: the reward, as a bare number."""

    paths = ("/slime",)
    body = SlimeRequest
    response = float

    def inputs(self, body: SlimeRequest, check: Validate) -> Inputs:
        check.text("response", body.response)
        if isinstance(body.prompt, str):
            check.text("prompt", body.prompt)
            spelled = Input(body.prompt, body.response, "prompt", text_format_of(check.policy_format))
        else:
            spelled = candidate(check.messages("prompt", body.prompt), body.response, "response")
        return Inputs(labelled([spelled], [body.label]), 1)

    def respond(self, body: SlimeRequest, answer: Answer) -> float:
        return float(answer.rewards[0])


class SlimeDetails(Slime):
    """slime's remote reward model: `{"reward": r, ...}`, with each objective and the step
    statistics of a model that has them (`--reward-key reward`)."""

    paths = ("/slime/details",)
    response = dict[str, float]

    def respond(self, body: SlimeRequest, answer: Answer) -> dict[str, float]:  # type: ignore[override]
        details = {name: values[0] for name, values in answer.model.details(answer.scores).items()}
        return {"reward": float(answer.rewards[0]), **details}
