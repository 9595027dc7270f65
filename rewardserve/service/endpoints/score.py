"""`POST /score`: scalar rewards of (prompt, response) or chat `messages` items, in request
order; and the model's objectives or step rewards, when it has them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rewardserve.scoring.items import ScoreItem, score_input
from rewardserve.scoring.schemas import TRUNCATE, Body, ModelName, PolicyFormat
from rewardserve.scoring.validate import Inputs, Validate
from rewardserve.service.endpoints.base import Answer, Endpoint


class ScoreRequest(Body):
    model: ModelName = None
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
    components: dict[str, list[float]] | None = Field(
        None,
        description="Composed rewards: each component's value per item, raw (before normalisation and weights), "
        "and NAME_fallback (1 where a failed component's fallback stood in).",
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
        sequences = [score_input(f"items[{i}]", item, body.policy_format, check) for i, item in enumerate(body.items)]
        return Inputs(sequences, len(body.items), body.truncate, check.objectives(body.objectives))

    def respond(self, body: ScoreRequest, answer: Answer) -> ScoreResponse:
        model, scores = answer.model, answer.scores
        return ScoreResponse(
            rewards=scores.rewards.tolist(),
            objectives=model.objectives(scores.objectives, answer.inputs.objectives),
            objective_weights=model.objectives(scores.weights, answer.inputs.objectives),
            steps=_steps(answer),
            verdicts=model.verdicts(scores),
            components=None if scores.components is None else {k: v.tolist() for k, v in scores.components.items()},
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
