"""Stage 7, respond: rewards in request order -> the endpoint's response body.

Choice probabilities use the bundle's calibration temperature T (`bundle/choice.py`):
p(a better than b) = sigmoid((r_a - r_b) / T), and for K responses the Plackett-Luce
first-choice probabilities softmax(r / T).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from rewardserve.bundle import choice
from rewardserve.service import schemas


class Respond:
    def __init__(self, model_name: str, temperature: float) -> None:
        self.model_name = model_name
        self.temperature = temperature

    def __call__(self, body: schemas.ScoringBody, rewards: np.ndarray) -> BaseModel:
        match body:
            case schemas.ScoreRequest():
                return schemas.ScoreResponse(rewards=rewards.tolist(), model=self.model_name)
            case schemas.CompareRequest(items=None):
                return self._ranking(rewards, body.pairwise)
            case schemas.CompareRequest():
                return self._pairs(rewards)
            case schemas.OpenRLHFRewardRequest():
                as_list = rewards.tolist()
                return schemas.OpenRLHFRewardResponse(rewards=as_list, scores=as_list)
        raise TypeError(f"not a scoring body: {type(body).__name__}")

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
