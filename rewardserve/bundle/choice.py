"""Choice probabilities from rewards: the models a reward model is trained under.

Bradley-Terry: p(i preferred over j) = sigmoid((r_i - r_j) / T). Plackett-Luce, its extension
to K responses: p(i chosen first among K) = softmax(r / T)_i. T is the bundle's calibration
temperature. numpy only, computed in float64 without overflow.
"""

from __future__ import annotations

import numpy as np


def p_better(rewards_a: np.ndarray, rewards_b: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Bradley-Terry p(a better than b), elementwise (broadcasting: a column against a row gives the matrix)."""
    gap = (np.asarray(rewards_a, dtype=np.float64) - np.asarray(rewards_b, dtype=np.float64)) / temperature
    return np.exp(-np.logaddexp(0.0, -gap))


def p_first(rewards: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Plackett-Luce first-choice probabilities: softmax(rewards / T)."""
    logits = np.asarray(rewards, dtype=np.float64) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def ranking(rewards: np.ndarray) -> np.ndarray:
    """Indices best first; equal rewards keep their input order."""
    return np.argsort(-np.asarray(rewards, dtype=np.float64), kind="stable")
