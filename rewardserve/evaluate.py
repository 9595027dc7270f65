"""Pairwise accuracy of a bundle on held-out human preferences, beside the length baseline.

Scores through the bundle's ONNX graph, so the figure is the served model's, not a PyTorch twin's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.preference_metrics import PreferenceMetrics, preference_metrics, ranking_accuracy
from rewardserve.training.data import Split
from rewardserve.training.preferences import DataOptions, PreferenceExample, load_preferences


@dataclass
class SubsetResult:
    metrics: PreferenceMetrics
    longer_wins: float  # accuracy of "the longer response is better" on the same pairs


@dataclass
class EvalReport:
    model: str
    split: str
    subsets: dict[str, SubsetResult] = field(default_factory=dict)

    def table(self) -> str:
        lines = [
            f"model {self.model}, split {self.split}",
            f"{'subset':<20}{'pairs':>7}{'accuracy':>10}{'longer wins':>13}{'log loss':>10}{'ECE':>7}",
        ]
        for name, r in self.subsets.items():
            m = r.metrics
            lines.append(
                f"{name:<20}{m.pairs:>7}{m.accuracy:>10.3f}{r.longer_wins:>13.3f}{m.log_loss:>10.3f}{m.ece:>7.3f}"
            )
        return "\n".join(lines)


def _result(reward_gaps: np.ndarray, length_gaps: np.ndarray, temperature: float) -> SubsetResult:
    return SubsetResult(preference_metrics(reward_gaps, temperature), ranking_accuracy(length_gaps))


@dataclass
class ScoredPairs:
    """Every ordered pair (better, worse) of some examples, scored by one graph, in a fixed order."""

    sources: list[str]
    reward_gaps: np.ndarray  # r(better) - r(worse)
    length_gaps: np.ndarray  # len(better) - len(worse), in characters


def score_pairs(runner: GraphRunner, examples: Sequence[PreferenceExample]) -> ScoredPairs:
    prompts = [e.prompt for e in examples for _ in e.responses]
    rewards = iter(runner.score(prompts, [r for e in examples for r in e.responses]))
    sources, gaps = [], []
    for e in examples:
        scores = [float(next(rewards)) for _ in e.responses]
        for i, j in e.ordered_pairs():
            sources.append(e.source)
            gaps.append((scores[i] - scores[j], len(e.responses[i]) - len(e.responses[j])))
    gaps_array = np.array(gaps, dtype=np.float64).reshape(-1, 2)
    return ScoredPairs(sources, gaps_array[:, 0], gaps_array[:, 1])


def evaluate_examples(runtime: BundleRuntime, examples: Sequence[PreferenceExample], split: str) -> EvalReport:
    scored = score_pairs(runtime, examples)
    subsets: dict[str, list[int]] = defaultdict(list)
    for index, source in enumerate(scored.sources):
        subsets[source].append(index)
        if source.startswith("helpful"):
            subsets["helpful (all)"].append(index)
        subsets["all"].append(index)
    temperature = runtime.manifest.calibration_temperature
    report = EvalReport(model=runtime.manifest.name, split=split)
    for name in sorted(subsets, key=lambda n: (n == "all", n)):
        rows = subsets[name]
        report.subsets[name] = _result(scored.reward_gaps[rows], scored.length_gaps[rows], temperature)
    return report


def evaluate_bundle(bundle: Path, data: Sequence[Path], split: Split = "heldout") -> EvalReport:
    runtime = BundleRuntime(bundle)
    options = DataOptions(chat_template=runtime.manifest.input_format.chat_template)
    examples, _ = load_preferences(data, split=split, options=options)
    return evaluate_examples(runtime, examples, split)
