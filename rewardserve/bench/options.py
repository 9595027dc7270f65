"""What a `rewardserve bench` run is asked (BenchOptions) and what one load on one server
measured (Served): shared by the run (run.py) and its report (report.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rewardserve.bench.load import LoadResult, ServerCounts
from rewardserve.bench.process import CpuTime


@dataclass
class BenchOptions:
    bundle: Path
    url: str | None = None
    concurrency: int = 64
    items_per_request: int = 8
    single_concurrency: int = 128
    sequences: int = 2048
    single_requests: int = 64
    baseline_checkpoint: Path | None = None
    baseline: bool = True
    rounds: int = 3
    versus: Path | None = None


@dataclass(frozen=True)
class Served:
    """One load on one server: what the clients saw, what its engine did, the CPU it used."""

    load: LoadResult
    counts: ServerCounts
    cpu: CpuTime | None
    client_cpu: float  # seconds of the load generator's own CPU, on the same cores
