"""Timing one piece of work for benchmarks: a first run that compiles kernels, then the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of `repeats` runs of `run`, after one untimed run (kernels compiled,
    caches warm)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
