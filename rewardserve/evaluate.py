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
from rewardserve.training.data import PreferencePair, Split, load_hh


@dataclass
class SubsetResult:
    pairs: int
    accuracy: float
    longer_wins: float


@dataclass
class EvalReport:
    model: str
    split: str
    subsets: dict[str, SubsetResult] = field(default_factory=dict)

    def table(self) -> str:
        lines = [
            f"model {self.model}, split {self.split}",
            f"{'subset':<20}{'pairs':>7}{'accuracy':>10}{'longer wins':>13}",
        ]
        for name, r in self.subsets.items():
            lines.append(f"{name:<20}{r.pairs:>7}{r.accuracy:>10.3f}{r.longer_wins:>13.3f}")
        return "\n".join(lines)


def _result(chosen: np.ndarray, rejected: np.ndarray, pairs: Sequence[PreferencePair]) -> SubsetResult:
    # A tie (equal rewards or equal lengths) counts as half right: neither side is picked.
    def wins(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean((a > b) + 0.5 * (a == b)))

    chosen_len = np.array([len(p.chosen) for p in pairs])
    rejected_len = np.array([len(p.rejected) for p in pairs])
    return SubsetResult(len(pairs), wins(chosen, rejected), wins(chosen_len, rejected_len))


def evaluate_bundle(bundle: Path, data: Sequence[Path], split: Split = "heldout") -> EvalReport:
    runtime = BundleRuntime(bundle)
    pairs, _ = load_hh(data, split=split)
    prompts = [p.prompt for p in pairs]
    chosen = runtime.score(prompts, [p.chosen for p in pairs])
    rejected = runtime.score(prompts, [p.rejected for p in pairs])
    report = EvalReport(model=runtime.manifest.name, split=split)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_source[p.source].append(i)
        if p.source.startswith("helpful"):
            by_source["helpful (all)"].append(i)
    for name, idx in sorted(by_source.items()):
        report.subsets[name] = _result(chosen[idx], rejected[idx], [pairs[i] for i in idx])
    report.subsets["all"] = _result(chosen, rejected, pairs)
    return report
