"""`POST /score`: scalar rewards of (prompt, response) or chat `messages` items, in request
order; and the model's objectives or step rewards, when it has them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, model_validator

from rewardserve.scoring.validate import Input, Inputs, Validate, candidate, text_format_of
from rewardserve.service.endpoints.base import Answer, Endpoint
from rewardserve.service.schemas import TRUNCATE, Body, Messages, PolicyFormat, Text, one_form


class ScoreItem(Body):
    """Either `prompt` and `response`, or `messages`: a conversation whose last (assistant)
    message is the response, rendered with the bundle's chat template. For a process reward
    model, the response may come as `steps` instead, beside `prompt` or `messages` (then the
    conversation so far): the server writes each step followed by the model's step separator."""

    prompt: Text | None = Field(None, description="The conversation so far, e.g. '\\n\\nHuman: How do I ...?'")
    response: Text | None = Field(None, description="The response to score.")
    messages: Messages | None = Field(None, description="Chat form: the last message is the assistant's response.")
    steps: Annotated[list[Text], Field(min_length=1)] | None = Field(
        None,
        description="Process reward models: the response's reasoning steps, without separators; the response "
        "scored is separator.join(steps) + separator.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ScoreItem:
        if self.steps is not None:
            if self.response is not None:
                raise ValueError("response: not with steps (send the response as text or as steps)")
            one_form(self, texts=("prompt",))
            return self
        one_form(self, texts=("prompt", "response"))
        if self.messages is not None and self.messages[-1].role != "assistant":
            role = self.messages[-1].role
            raise ValueError(f"messages: the last message is the response: an assistant's, not a {role}'s")
        return self


class ScoreRequest(Body):
    items: list[ScoreItem] = Field(min_length=1)
    objectives: list[str] | None = Field(
        None,
        description="Multi-objective models: the objectives to answer (default: all of them); [] answers none.",
    )
    truncate: bool = TRUNCATE
    policy_format: PolicyFormat = Field(
        None,
        description="Text items are a policy's chat-formatted prompt and its response (decoded with special "
        "tokens): parsed back to messages in this format ('auto': detected) and rendered with the model's "
        "template. Unset or 'raw': texts are scored as they are.",
    )


class StepReward(BaseModel):
    reward: float = Field(description="The step's reward: the model's probability of its step class.")
    span: tuple[int, int] = Field(description="[start, end) of the step's text in the response, separator excluded.")


class ScoreResponse(BaseModel):
    rewards: list[float] = Field(description="One scalar reward per item, in request order.")
    objectives: dict[str, list[float]] | None = Field(
        None, description="Multi-objective models: each objective's value per item, in request order."
    )
    objective_weights: dict[str, list[float]] | None = Field(
        None, description="Gated multi-objective models: the weight the gating network gave each objective per item."
    )
    verdicts: dict[str, list[float]] | None = Field(
        None,
        description="Judges: each verdict's probability per item (e.g. yes and no), renormalised over the verdicts.",
    )
    steps: list[list[StepReward]] | None = Field(
        None, description="Process reward models: per item, each step's reward and character span in the response."
    )
    model: str


class Score(Endpoint[ScoreRequest]):
    """Scalar rewards of (prompt, response) or chat `messages` items, in request order; and the
    model's objectives or step rewards, when it has them."""

    paths = ("/score",)
    body = ScoreRequest
    response = ScoreResponse
    omit_none = True  # a scalar model's answer has no objectives or steps fields, rather than nulls

    def inputs(self, body: ScoreRequest, check: Validate) -> Inputs:
        check.count("items", len(body.items))
        sequences = [self._item(f"items[{i}]", item, body.policy_format, check) for i, item in enumerate(body.items)]
        return Inputs(sequences, len(body.items), body.truncate, check.objectives(body.objectives))

    @staticmethod
    def _item(path: str, item: ScoreItem, policy_format: str | None, check: Validate) -> Input:
        if item.steps is not None:  # counted with every other response's steps (Validate)
            response = check.steps_response(f"{path}.steps", item.steps)
            prompt = check.prompt(f"{path}.prompt", item.prompt, item.messages, f"{path}.messages")
            return candidate(prompt, response, f"{path}.steps")
        if item.messages is None:
            assert item.prompt is not None and item.response is not None
            check.text(f"{path}.prompt", item.prompt)
            check.text(f"{path}.response", item.response)
            return Input(item.prompt, item.response, path, text_format_of(policy_format))
        conversation = check.messages(f"{path}.messages", item.messages)
        return Input(conversation[:-1], conversation[-1:], f"{path}.messages")

    def respond(self, body: ScoreRequest, answer: Answer) -> ScoreResponse:
        model, scores = answer.model, answer.scores
        return ScoreResponse(
            rewards=scores.rewards.tolist(),
            objectives=model.objectives(scores.objectives, answer.inputs.objectives),
            objective_weights=model.objectives(scores.weights, answer.inputs.objectives),
            steps=_steps(answer),
            verdicts=model.verdicts(scores),
            model=model.model_name,
        )


def _steps(answer: Answer) -> list[list[StepReward]] | None:
    """Each item's step rewards, with the span of each step in the response (Validate)."""
    if answer.scores.steps is None:
        return None
    return [
        [StepReward(reward=r, span=span) for r, span in zip(steps.tolist(), spelled.steps or (), strict=True)]
        for steps, spelled in zip(answer.scores.steps, answer.inputs.sequences, strict=True)
    ]
