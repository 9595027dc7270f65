"""The raw engine on the same sequences: ONNX Runtime alone, length-sorted, no HTTP, no queue."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from rewardserve.bundle import EncodedSequence
from rewardserve.bundle.runtime import GraphRunner

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
PROBE_SEQUENCES = 256


@dataclass(frozen=True)
class EngineRun:
    batch_size: int
    sequences: int
    tokens: int  # real tokens
    padded_tokens: int
    seconds: float

    @classmethod
    def combine(cls, runs: Sequence[EngineRun]) -> EngineRun:
        return cls(
            runs[0].batch_size,
            sum(r.sequences for r in runs),
            sum(r.tokens for r in runs),
            sum(r.padded_tokens for r in runs),
            sum(r.seconds for r in runs),
        )

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def padding_ratio(self) -> float:
        return 1 - self.tokens / self.padded_tokens


def sorted_run(runner: GraphRunner, pairs: Sequence[EncodedSequence], batch_size: int, label: str = "") -> EngineRun:
    """All `pairs` in length-sorted batches of `batch_size`: the least padding any batching gets."""
    ordered = sorted(pairs, key=len)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    padded = sum(max(map(len, b)) * len(b) for b in batches)
    started = time.perf_counter()
    for batch in tqdm(batches, desc=label, unit="batch", leave=False, disable=not label):
        runner.score(runner.encoder.pad(batch))
    seconds = time.perf_counter() - started
    return EngineRun(batch_size, len(pairs), sum(map(len, pairs)), padded, seconds)


def probe_batch_sizes(runner: GraphRunner, pairs: Sequence[EncodedSequence], seed: int = 0) -> list[EngineRun]:
    """Each batch size of BATCH_SIZES on the same random sample of `pairs`, length-sorted."""
    sample = random.Random(seed).sample(list(pairs), min(PROBE_SEQUENCES, len(pairs)))
    return [sorted_run(runner, sample, size, f"engine probe, batch {size}") for size in BATCH_SIZES]


def batch1_latencies(runner: GraphRunner, pairs: Sequence[EncodedSequence]) -> np.ndarray:
    """Seconds per single-sequence engine call (padding included: it is what a request pays)."""
    latencies = []
    for pair in pairs:
        started = time.perf_counter()
        runner.score(runner.encoder.pad([pair]))
        latencies.append(time.perf_counter() - started)
    return np.array(latencies)
