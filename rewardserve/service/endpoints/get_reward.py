"""`POST /get_reward`: OpenRLHF's remote reward protocol (`--remote_rm_url
http://HOST:PORT/get_reward`). Its queries are the policy's decoded text, turned back into
messages (retemplate.py) and rendered with the model's template. A model's objectives and
step rewards go in `extra_logs`, which OpenRLHF averages into its logs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardserve.scoring.schemas import ModelName, PolicyFormat, Text
from rewardserve.scoring.validate import Inputs, Validate, labelled
from rewardserve.service.endpoints.base import Answer, Endpoint


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF's remote reward protocol (`--remote_rm_url http://host:port/get_reward`)."""

    # Other fields OpenRLHF versions send are ignored, so its requests work unchanged.
    model_config = ConfigDict(extra="ignore")
    query: list[Text] = Field(
        description="Full texts, each a prompt followed by its response, as the policy's tokenizer decoded "
        "them: parsed back to messages (see policy_format) and rendered with the model's template."
    )
    prompts: list[Text] | None = Field(
        None, description="The prompt each query starts with; without it, a whole query is scored as the response."
    )
    labels: list[Any] | None = Field(
        None,
        description="Each query's label (OpenRLHF's `--label_key`): a composed reward's rules read it (the "
        "reference answer); a reward model alone needs none.",
    )
    model: ModelName = None
    policy_format: PolicyFormat = Field(
        None,
        description="The queries' chat format ('auto': detected; 'raw': scored as they are, split after "
        "their prompts); default: the server's POLICY_FORMAT.",
    )

    @model_validator(mode="after")
    def _queries_start_with_their_prompts(self) -> OpenRLHFRewardRequest:
        if self.labels is not None and len(self.labels) != len(self.query):
            raise ValueError(f"labels: {len(self.labels)} labels for {len(self.query)} queries")
        if self.prompts is None:
            return self
        if len(self.prompts) != len(self.query):
            raise ValueError(f"prompts: {len(self.prompts)} prompts for {len(self.query)} queries")
        for index, (query, prompt) in enumerate(zip(self.query, self.prompts, strict=True)):
            if not query.startswith(prompt):
                raise ValueError(f"query[{index}]: does not start with prompts[{index}]")
        return self


class OpenRLHFRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="The same rewards: OpenRLHF filters samples by these.")
    extra_logs: dict[str, list[float]] = Field(default_factory=dict)


class GetReward(Endpoint[OpenRLHFRewardRequest]):
    """OpenRLHF's remote reward protocol: pass `--remote_rm_url http://HOST:PORT/get_reward`."""

    paths = ("/get_reward",)
    body = OpenRLHFRewardRequest
    response = OpenRLHFRewardResponse

    def inputs(self, body: OpenRLHFRewardRequest, check: Validate) -> Inputs:
        sequences = check.policy_texts("query", body.query, body.prompts, body.policy_format)
        return Inputs(labelled(sequences, body.labels), len(body.query))

    def respond(self, body: OpenRLHFRewardRequest, answer: Answer) -> OpenRLHFRewardResponse:
        rewards = answer.rewards.tolist()
        return OpenRLHFRewardResponse(rewards=rewards, scores=rewards, extra_logs=answer.model.details(answer.scores))
