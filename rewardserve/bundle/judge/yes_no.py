"""The yes/no rule (verifiers, "Generative Verifiers", Zhang et al. 2024): two verdict tokens, the
first the positive one. reward = log p(yes) - log p(no), the logit of p(yes) over the two
tokens; the probability itself is p(yes) / (p(yes) + p(no)), its sigmoid."""

from __future__ import annotations

import numpy as np

NAME = "yes_no"
DESCRIPTION = "log p({0}) - log p({1})"


def check(labels: list[str], values: list[float] | None) -> None:
    if len(labels) != 2:
        raise ValueError(f"verdicts: the yes/no rule reads two tokens, the positive one first; got {len(labels)}")
    if values is not None:
        raise ValueError("values: the yes/no rule gives none")


def reward(log_probs: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """(rows, 2) log-probabilities (or logits: any constant per row cancels) -> (rows,)."""
    return log_probs[:, 0] - log_probs[:, 1]
