"""How well a reward model agrees with held-out human preferences, and whether it favours length.

`rewardserve eval` compares every (better, worse) pair through a scorer: the server's `/compare`
(so the figures are the served model's, probabilities included) or the bundle in-process. It
reports pairwise accuracy overall and per source, the margin distribution, the calibration of
p(better wins), and reward against response length: the length-bias check, since a reward
model that learned "longer is better" passes accuracy on data where longer usually wins.
"""

from __future__ import annotations

import datetime
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from rewardserve.client.scorers import Scorer
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.metrics import CalibrationBin, calibration_curve, preference_metrics, ranking_accuracy

MARGIN_BINS = 40
SCATTER_POINTS = 3000  # responses kept for the reward-vs-length plot (a fixed random sample)
LENGTH_BINS = 12


@dataclass
class ComparedPairs:
    """Every ordered (better, worse) pair, compared by a scorer; lengths in characters."""

    sources: list[str]
    better: np.ndarray  # reward of the response the humans preferred
    worse: np.ndarray
    p_better: np.ndarray  # the scorer's p(better wins)
    better_length: np.ndarray
    worse_length: np.ndarray
    # one entry per distinct response: its reward and length
    response_rewards: np.ndarray
    response_lengths: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        return self.better - self.worse


def compare_pairs(
    scorer: Scorer,
    examples: Sequence[PreferenceExample],
    layout: Literal["pair", "chat"] = "pair",
    chunk: int = 256,
    progress: bool = True,
) -> ComparedPairs:
    """Every ordered pair of `examples` compared by `scorer`, each given as a model of `layout`
    reads it (PreferenceExample.model_inputs)."""
    pairs = [(e, i, j) for e in examples for i, j in e.ordered_pairs()]
    inputs = {id(e): e.model_inputs(layout) for e in examples}
    results = []
    with tqdm(total=len(pairs), unit=" pairs", desc="comparing", disable=not progress) as bar:
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            prompts = [inputs[id(e)][i][0] for e, i, _ in part]
            better = [inputs[id(e)][i][1] for e, i, _ in part]
            worse = [inputs[id(e)][j][1] for e, _, j in part]
            results += scorer.compare(prompts, better, worse)
            bar.update(len(part))
    responses: dict[tuple[int, int], tuple[float, int]] = {}
    for (e, i, j), r in zip(pairs, results, strict=True):
        responses[id(e), i] = (r.reward_a, len(e.responses[i]))
        responses[id(e), j] = (r.reward_b, len(e.responses[j]))
    per_response = np.array(list(responses.values()), dtype=np.float64).reshape(-1, 2)
    return ComparedPairs(
        sources=[e.source for e, _, _ in pairs],
        better=np.array([r.reward_a for r in results]),
        worse=np.array([r.reward_b for r in results]),
        p_better=np.array([r.p_a_better for r in results]),
        better_length=np.array([len(e.responses[i]) for e, i, _ in pairs]),
        worse_length=np.array([len(e.responses[j]) for e, _, j in pairs]),
        response_rewards=per_response[:, 0],
        response_lengths=per_response[:, 1],
    )


# ---------------------------------------------------------------------------- the report


@dataclass
class SubsetResult:
    name: str
    pairs: int
    accuracy: float  # ties count half
    accuracy_ci95: tuple[float, float]  # Wilson interval
    longer_wins: float  # accuracy of "the longer response is better" on the same pairs
    log_loss: float  # mean -log p(better wins)
    ece: float
    mean_margin: float  # mean r(better) - r(worse)


@dataclass
class LengthBias:
    responses: int
    pearson: float  # reward against length (characters), over distinct responses
    spearman: float
    # accuracy where the preferred response is the longer one, and where it is the shorter one:
    # a length-biased model is right on the first and wrong on the second
    chosen_longer_pairs: int
    chosen_longer_accuracy: float
    chosen_shorter_pairs: int
    chosen_shorter_accuracy: float
    binned: list[dict[str, float]]  # mean reward per length bin (quantile bins)
    sample: list[tuple[float, float]]  # (length, reward) of a random sample, for the scatter plot


@dataclass
class EvalReport:
    model: str
    scorer: str
    data: list[str]
    split: str
    created: str
    subsets: list[SubsetResult] = field(default_factory=list)
    margin_quantiles: dict[str, float] = field(default_factory=dict)
    margin_histogram: dict[str, list[float]] = field(default_factory=dict)  # edges, counts
    calibration: list[CalibrationBin] = field(default_factory=list)
    length: LengthBias | None = None

    @property
    def overall(self) -> SubsetResult:
        return next(s for s in self.subsets if s.name == "all")

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"model {self.model}, split {self.split}",
            f"{'subset':<20}{'pairs':>7}{'accuracy':>10}{'95% CI':>15}{'longer wins':>13}{'log loss':>10}{'ECE':>7}",
        ]
        for s in self.subsets:
            ci = f"{s.accuracy_ci95[0]:.3f}-{s.accuracy_ci95[1]:.3f}"
            lines.append(
                f"{s.name:<20}{s.pairs:>7}{s.accuracy:>10.3f}{ci:>15}{s.longer_wins:>13.3f}{s.log_loss:>10.3f}{s.ece:>7.3f}"
            )
        if (b := self.length) is not None:
            lines.append(f"length bias: reward-length Spearman {b.spearman:+.3f} over {b.responses} responses")
            lines.append(
                f"  accuracy {b.chosen_longer_accuracy:.3f} where the preferred response is the longer "
                f"({b.chosen_longer_pairs} pairs), {b.chosen_shorter_accuracy:.3f} where it is the shorter "
                f"({b.chosen_shorter_pairs})"
            )
        return "\n".join(lines)


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank (for Spearman's correlation)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts + 1) / 2)[inverse]


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _subset(name: str, pairs: ComparedPairs, rows: np.ndarray) -> SubsetResult:
    gaps = pairs.gaps[rows]
    metrics = preference_metrics(gaps, p_better=pairs.p_better[rows])
    length_gaps = pairs.better_length[rows] - pairs.worse_length[rows]
    return SubsetResult(
        name=name,
        pairs=metrics.pairs,
        accuracy=metrics.accuracy,
        accuracy_ci95=wilson_interval(metrics.accuracy * metrics.pairs, metrics.pairs),
        longer_wins=ranking_accuracy(length_gaps),
        log_loss=metrics.log_loss,
        ece=metrics.ece,
        mean_margin=metrics.mean_margin,
    )


def _length_bias(pairs: ComparedPairs, seed: int = 0) -> LengthBias:
    rewards, lengths = pairs.response_rewards, pairs.response_lengths
    longer = pairs.better_length > pairs.worse_length
    shorter = pairs.better_length < pairs.worse_length
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, LENGTH_BINS + 1)))
    index = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    binned = [
        {"low": float(edges[b]), "high": float(edges[b + 1]), "responses": int((index == b).sum()),
         "mean_length": float(lengths[index == b].mean()), "mean_reward": float(rewards[index == b].mean())}
        for b in range(len(edges) - 1)
        if (index == b).any()
    ]  # fmt: skip
    keep = np.random.default_rng(seed).permutation(len(rewards))[:SCATTER_POINTS]
    return LengthBias(
        responses=len(rewards),
        pearson=_correlation(lengths, rewards),
        spearman=_correlation(_ranks(lengths), _ranks(rewards)),
        chosen_longer_pairs=int(longer.sum()),
        chosen_longer_accuracy=ranking_accuracy(pairs.gaps[longer]) if longer.any() else math.nan,
        chosen_shorter_pairs=int(shorter.sum()),
        chosen_shorter_accuracy=ranking_accuracy(pairs.gaps[shorter]) if shorter.any() else math.nan,
        binned=binned,
        sample=[(float(lengths[k]), float(rewards[k])) for k in sorted(keep)],
    )


def build_report(pairs: ComparedPairs, *, model: str, scorer: str, data: Sequence[Path], split: str) -> EvalReport:
    subsets: dict[str, list[int]] = defaultdict(list)
    for index, source in enumerate(pairs.sources):
        subsets[source].append(index)
        if source.startswith("helpful"):
            subsets["helpful (all)"].append(index)
        subsets["all"].append(index)
    gaps = pairs.gaps
    counts, edges = np.histogram(gaps, bins=MARGIN_BINS)
    return EvalReport(
        model=model,
        scorer=scorer,
        data=[str(p) for p in data],
        split=split,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        subsets=[_subset(n, pairs, np.array(subsets[n])) for n in sorted(subsets, key=lambda n: (n == "all", n))],
        margin_quantiles={f"p{q}": float(np.percentile(gaps, q)) for q in (5, 25, 50, 75, 95)},
        margin_histogram={"edges": edges.tolist(), "counts": counts.astype(float).tolist()},
        calibration=calibration_curve(pairs.p_better),
        length=_length_bias(pairs),
    )
