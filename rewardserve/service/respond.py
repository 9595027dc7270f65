"""Stage 7, respond: rewards in request order -> the endpoint's response body.

Choice probabilities use the bundle's calibration temperature T (`bundle/choice.py`):
p(a better than b) = sigmoid((r_a - r_b) / T), and for K responses the Plackett-Luce
first-choice probabilities softmax(r / T). `/compare` answers on the scalar reward alone;
`/score` adds the model's objectives or step rewards, and `/get_reward` puts them in the
`extra_logs` OpenRLHF logs (each objective, and the mean and min step reward).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from rewardserve.bundle import choice
from rewardserve.bundle.outputs import ModelOutputs, Scores
from rewardserve.service import schemas
from rewardserve.service.validate import Inputs


class Respond:
    def __init__(self, model_name: str, temperature: float, outputs: ModelOutputs | None = None) -> None:
        self.model_name = model_name
        self.temperature = temperature
        self.outputs = outputs or ModelOutputs()

    def __call__(self, body: schemas.ScoringBody, scores: Scores, inputs: Inputs) -> BaseModel:
        rewards = scores.rewards
        match body:
            case schemas.ScoreRequest():
                return schemas.ScoreResponse(
                    rewards=rewards.tolist(),
                    objectives=self._objectives(scores.objectives, inputs.objectives),
                    objective_weights=self._objectives(scores.weights, inputs.objectives),
                    steps=_steps(scores, inputs),
                    model=self.model_name,
                )
            case schemas.CompareRequest(items=None):
                return self._ranking(rewards, body.pairwise)
            case schemas.CompareRequest():
                return self._pairs(rewards)
            case schemas.OpenRLHFRewardRequest():
                as_list = rewards.tolist()
                return schemas.OpenRLHFRewardResponse(rewards=as_list, scores=as_list, extra_logs=self._logs(scores))
        raise TypeError(f"not a scoring body: {type(body).__name__}")

    def _objectives(self, values: np.ndarray | None, named: list[str] | None) -> dict[str, list[float]] | None:
        """{objective: its value per item}, for the objectives asked for (all by default)."""
        if values is None or self.outputs.objectives is None:
            return None
        names = self.outputs.objectives.names
        return {name: values[:, names.index(name)].tolist() for name in (names if named is None else named)}

    def _logs(self, scores: Scores) -> dict[str, list[float]]:
        """OpenRLHF's extra_logs: one value per query under each name, averaged in its logs."""
        logs = self._objectives(scores.objectives, None) or {}
        if scores.steps is not None:
            logs["step_reward_mean"] = [float(s.mean()) for s in scores.steps]
            logs["step_reward_min"] = [float(s.min()) for s in scores.steps]
            logs["steps"] = [float(len(s)) for s in scores.steps]
        return logs

    def _pairs(self, rewards: np.ndarray) -> schemas.CompareResponse:
        """Every item's `a` came first, then every item's `b` (validate.py)."""
        n = len(rewards) // 2
        reward_a, reward_b = rewards[:n], rewards[n:]
        p_a = choice.p_better(reward_a, reward_b, self.temperature)
        results = [
            schemas.CompareResult(reward_a=a, reward_b=b, p_a_better=p)
            for a, b, p in zip(reward_a.tolist(), reward_b.tolist(), p_a.tolist(), strict=True)
        ]
        return schemas.CompareResponse(results=results, model=self.model_name)

    def _ranking(self, rewards: np.ndarray, pairwise: bool) -> schemas.RankingResponse:
        t = self.temperature
        matrix = choice.p_better(rewards[:, None], rewards[None, :], t).tolist() if pairwise else None
        return schemas.RankingResponse(
            rewards=rewards.tolist(),
            ranking=choice.ranking(rewards).tolist(),
            p_best=choice.p_first(rewards, t).tolist(),
            p_better=matrix,
            model=self.model_name,
        )


def _steps(scores: Scores, inputs: Inputs) -> list[list[schemas.StepReward]] | None:
    """Each item's step rewards, with the span of each step in the response (validate.py)."""
    if scores.steps is None:
        return None
    return [
        [schemas.StepReward(reward=r, span=span) for r, span in zip(steps.tolist(), spelled.steps or (), strict=True)]
        for steps, spelled in zip(scores.steps, inputs.sequences, strict=True)
    ]
