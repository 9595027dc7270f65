"""Stage 7, respond: scores in request order -> the endpoint's response body.

Each endpoint writes its own body (`endpoints/`), from an Answer: the request's scores and
inputs, its context, and what any response may say of the model (`Respond`: its name, its
calibration temperature, its objectives and step rewards).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from rewardserve.bundle.outputs import ModelOutputs, Scores
from rewardserve.scoring.validate import Inputs
from rewardserve.service.context import RequestContext

B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class Answer:
    """What an endpoint answers from."""

    scores: Scores
    inputs: Inputs
    context: RequestContext
    model: Respond

    @property
    def rewards(self) -> np.ndarray:
        return self.scores.rewards


class Respond:
    def __init__(self, model_name: str, temperature: float, outputs: ModelOutputs | None = None) -> None:
        self.model_name = model_name
        self.temperature = temperature  # choice.py: p(a better than b) = sigmoid((r_a - r_b) / T)
        self.outputs = outputs or ModelOutputs()

    def __call__(
        self, write: Callable[[B, Answer], Any], body: B, scores: Scores, inputs: Inputs, context: RequestContext
    ) -> Any:
        """The body its endpoint's `write` makes of the scores."""
        return write(body, Answer(scores, inputs, context, self))

    @property
    def labels(self) -> list[str]:
        """The name of each output a classifier view answers (vLLM's `label`, SGLang's `id2label`):
        the objectives, or `LABEL_0` for a reward alone, as transformers names a one-label head."""
        return self.outputs.objectives.names if self.outputs.objectives is not None else ["LABEL_0"]

    def objectives(self, values: np.ndarray | None, named: list[str] | None = None) -> dict[str, list[float]] | None:
        """{objective: its value per item}, for the objectives asked for (all by default)."""
        if values is None or self.outputs.objectives is None:
            return None
        names = self.outputs.objectives.names
        return {name: values[:, names.index(name)].tolist() for name in (names if named is None else named)}

    def verdicts(self, scores: Scores) -> dict[str, list[float]] | None:
        """A judge's {verdict: its probability per item}, renormalised over the verdicts."""
        if scores.verdict is None or self.outputs.verdict is None:
            return None
        return {label: scores.verdict[:, i].tolist() for i, label in enumerate(self.outputs.verdict.labels)}

    def details(self, scores: Scores) -> dict[str, list[float]]:
        """One value per item under each name, beside the reward, for trainers that log them
        (OpenRLHF's extra_logs, verl's reward_extra_info, slime's reward dict): each objective,
        the mean and min step reward and the number of steps, and a judge's probability of each
        verdict (`p_yes`, `p_no`; `p_1`..`p_10`), renormalised over its verdicts."""
        details = self.objectives(scores.objectives) or {}
        details |= {f"p_{label}": values for label, values in (self.verdicts(scores) or {}).items()}
        if scores.steps is not None:
            details["step_reward_mean"] = [float(s.mean()) for s in scores.steps]
            details["step_reward_min"] = [float(s.min()) for s in scores.steps]
            details["steps"] = [float(len(s)) for s in scores.steps]
        return details
