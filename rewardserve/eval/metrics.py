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


@dataclass(frozen=True)
class CalibrationBin:
    low: float  # confidence range of the bin, within [0.5, 1]
    high: float
    pairs: int
    confidence: float  # mean predicted probability of the predicted winner
    accuracy: float  # share of those pairs whose predicted winner the humans preferred


def calibration_curve(p_better: np.ndarray, bins: int = ECE_BINS) -> list[CalibrationBin]:
    """Reliability of the predicted winner of each (better, worse) pair, whose probability of
    being right is max(p, 1 - p) for p = p(better wins): pairs in equal-width confidence bins
    over [0.5, 1], each with its mean confidence and accuracy. Empty bins are left out."""
    p_better = np.asarray(p_better, dtype=np.float64)
    confidence = np.maximum(p_better, 1 - p_better)
    correct = _correct(p_better - 0.5)
    index = np.minimum(((confidence - 0.5) * 2 * bins).astype(int), bins - 1)
    curve = []
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            low, high = 0.5 + b / (2 * bins), 0.5 + (b + 1) / (2 * bins)
            curve.append(
                CalibrationBin(
                    low, high, int(in_bin.sum()), float(confidence[in_bin].mean()), float(correct[in_bin].mean())
                )
            )
    return curve


def expected_calibration_error(p_better: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean |accuracy - confidence| of the calibration curve's bins, weighted by size."""
    curve = calibration_curve(p_better, bins)
    total = sum(b.pairs for b in curve)
    return float(sum(b.pairs / total * abs(b.accuracy - b.confidence) for b in curve))


def preference_metrics(
    gaps: np.ndarray, temperature: float = 1.0, p_better: np.ndarray | None = None
) -> PreferenceMetrics:
    """Metrics of the reward gaps r_better - r_worse of human-labelled pairs, with
    p(better wins) = sigmoid(gap / T), or `p_better` as given (e.g. served by /compare)."""
    gaps = np.asarray(gaps, dtype=np.float64)
    if gaps.size == 0:
        raise ValueError("no pairs to evaluate")
    if p_better is None:
        p_better = np.exp(_log_sigmoid(gaps / temperature))
        log_loss = float(-_log_sigmoid(gaps / temperature).mean())
    else:
        p_better = np.asarray(p_better, dtype=np.float64)
        log_loss = float(-np.log(np.clip(p_better, 1e-300, 1.0)).mean())
    return PreferenceMetrics(
        pairs=int(gaps.size),
        accuracy=ranking_accuracy(gaps),
        mean_margin=float(gaps.mean()),
        log_loss=log_loss,
        ece=expected_calibration_error(p_better),
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
