"""How well rewards agree with human preferences, from the reward gaps of (better, worse) pairs.

numpy only: training's evaluation, `rewardserve eval` and export share these definitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ECE_BINS = 10


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@dataclass(frozen=True)
class PreferenceMetrics:
    pairs: int
    accuracy: float  # share of pairs ranked right; a tie counts half
    mean_margin: float  # mean of r_better - r_worse
    log_loss: float  # mean -log sigmoid(gap / T)
    ece: float  # expected calibration error of sigmoid(gap / T), 10 bins

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def ranking_accuracy(gaps: np.ndarray) -> float:
    """Share of pairs whose gap (better minus worse) is positive; a tie counts half, as neither
    side is picked."""
    return float(np.mean(_correct(gaps)))


def _correct(gaps: np.ndarray) -> np.ndarray:
    return (gaps > 0) + 0.5 * (gaps == 0)


def expected_calibration_error(gaps: np.ndarray, temperature: float = 1.0) -> float:
    """ECE of the predicted winner's probability max(p, 1 - p), p = sigmoid(gap / T), in
    equal-width bins over [0.5, 1]: the mean |accuracy - confidence|, weighted by bin size."""
    confidence = 1.0 / (1.0 + np.exp(-np.abs(gaps) / temperature))
    correct = _correct(gaps)
    bins = np.minimum(((confidence - 0.5) * 2 * ECE_BINS).astype(int), ECE_BINS - 1)
    error = 0.0
    for b in range(ECE_BINS):
        in_bin = bins == b
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def preference_metrics(gaps: np.ndarray, temperature: float = 1.0) -> PreferenceMetrics:
    """Metrics of the reward gaps r_better - r_worse of human-labelled pairs."""
    gaps = np.asarray(gaps, dtype=np.float64)
    if gaps.size == 0:
        raise ValueError("no pairs to evaluate")
    return PreferenceMetrics(
        pairs=int(gaps.size),
        accuracy=ranking_accuracy(gaps),
        mean_margin=float(gaps.mean()),
        log_loss=float(-_log_sigmoid(gaps / temperature).mean()),
        ece=expected_calibration_error(gaps, temperature),
    )


def fit_temperature(gaps: np.ndarray, lowest: float = 1e-2, highest: float = 1e3) -> float:
    """The T minimising the negative log-likelihood mean(-log sigmoid(gap / T)) of the pairs.

    The NLL is convex in 1/T, so its derivative is monotone and bisection finds the minimum;
    T is clamped to [lowest, highest] (perfectly separated pairs would drive it to 0).
    """
    gaps = np.asarray(gaps, dtype=np.float64)

    def slope(inverse_t: float) -> float:  # d NLL / d(1/T)
        return float(-np.mean(gaps / (1.0 + np.exp(np.clip(inverse_t * gaps, -500, 500)))))

    lo, hi = np.log(1 / highest), np.log(1 / lowest)
    if slope(np.exp(lo)) >= 0:
        return highest
    if slope(np.exp(hi)) <= 0:
        return lowest
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(np.exp(mid)) < 0 else (lo, mid)
    return float(1 / np.exp((lo + hi) / 2))
