"""Reward gaps of held-out preference pairs from a bare graph: what export's agreement gate and
its calibration fit read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rewardserve.bundle.runtime import GraphRunner, score_offline
from rewardserve.data.preferences import PreferenceExample


def reward_gaps(runner: GraphRunner, examples: Sequence[PreferenceExample]) -> np.ndarray:
    """r(better) - r(worse) of every strictly ordered pair of `examples`, in a fixed order."""
    prompts = [e.prompt for e in examples for _ in e.responses]
    rewards = iter(score_offline(runner, prompts, [r for e in examples for r in e.responses]))
    gaps = []
    for e in examples:
        scores = [float(next(rewards)) for _ in e.responses]
        gaps += [scores[i] - scores[j] for i, j in e.ordered_pairs()]
    return np.array(gaps, dtype=np.float64)
