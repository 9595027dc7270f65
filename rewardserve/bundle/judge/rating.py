"""The rating rule (G-Eval, Liu et al. 2023): verdict tokens that are scores ("1".."10"), and the
expected score over them, sum_k value_k * p(k), with p renormalised over the rating tokens,
instead of the one digit a sampled answer would give."""

from __future__ import annotations

import numpy as np

NAME = "rating"
DESCRIPTION = "sum of score * p(score), p renormalised over the scores {0}..{1}"


def check(labels: list[str], values: list[float] | None) -> None:
    if values is None or len(values) != len(labels) or len(labels) < 2:
        raise ValueError("values: the rating rule needs one score per verdict token, at least two")


def reward(log_probs: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """(rows, K) log-probabilities (or logits) -> (rows,) expected scores."""
    assert values is not None
    probabilities = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities @ values
