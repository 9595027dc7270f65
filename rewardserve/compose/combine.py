"""How component values become one reward: each normalised as its spec says, then a weighted
sum, or Llama 2's safety gate beside the weighted sum of the rest; then clipped.

Llama 2 (Touvron et al., 2023, section 3.2.2) scores with a safety and a helpfulness RM:
R_c = R_s where the prompt is tagged unsafe or R_s < 0.15, else R_h, R_s and R_h being the
models' sigmoid outputs. The gate here tests sigmoid(raw safety reward) < threshold, so it reads
the raw rewards whatever their normalisation, and the value it picks is the weighted,
normalised one. An item's label tags its prompt unsafe with {"unsafe": true}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rewardserve.compose.spec import Combine, Common


class Normalizer:
    """(value - mean) / std: the bundle's reference statistics, or a running mean and std of
    every value served so far (Welford), read before a request's values are added, so that a
    reward never depends on the values scored beside it."""

    def __init__(self, stats: tuple[float, float] | None = None) -> None:
        self.fixed = stats
        self.count, self.mean, self.squares = 0, 0.0, 0.0

    def __call__(self, values: np.ndarray) -> np.ndarray:
        mean, std = self.fixed or self._running()
        if self.fixed is None:
            self._add(values)
        return (values - mean) / std

    def _running(self) -> tuple[float, float]:
        if self.count < 2:
            return 0.0, 1.0  # too few values yet to say anything: as they are
        return self.mean, max(float(np.sqrt(self.squares / (self.count - 1))), 1e-6)

    def _add(self, values: np.ndarray) -> None:
        for value in values.astype(np.float64):
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.squares += delta * (value - self.mean)


def unsafe(labels: Sequence[Any]) -> np.ndarray:
    """Whether each item's label tags its prompt unsafe ({"unsafe": true})."""
    return np.array([isinstance(label, dict) and bool(label.get("unsafe")) for label in labels], dtype=bool)


def combined(
    combine: Combine,
    specs: dict[str, Common],
    raw: dict[str, np.ndarray],
    normalised: dict[str, np.ndarray],
    labels: Sequence[Any],
    clip: tuple[float, float] | None,
) -> np.ndarray:
    """The reward of each item from its components' values (raw, and as normalised)."""
    weighted = {name: specs[name].weight * values for name, values in normalised.items()}
    total = np.zeros(len(labels))
    if combine.rule == "llama2":
        safety, helpfulness = combine.safety, combine.helpfulness
        assert safety is not None and helpfulness is not None  # the spec checked
        gate = unsafe(labels) | (1.0 / (1.0 + np.exp(-raw[safety])) < combine.threshold)
        total = np.where(gate, weighted.pop(safety), weighted.pop(helpfulness))
    for values in weighted.values():
        total = total + values
    return total if clip is None else np.clip(total, *clip)
