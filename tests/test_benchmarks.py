"""Every benchmark script imports and answers --help: a benchmark nobody runs must not rot
unseen (their figures are in docs/performance.md, each with its command). The scripts import
the tests' tiny models from `rewardserve.testing`, not through sys.path edits."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def help_of(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script.name, "--help"], cwd=BENCHMARKS, capture_output=True, text=True, timeout=300
    )


def test_every_benchmark_imports_and_answers_help():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) >= 19
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(scripts, pool.map(help_of, scripts), strict=True))
    failed = {s.name: d.stderr[-1500:] for s, d in done.items() if d.returncode != 0 or "usage:" not in d.stdout}
    assert failed == {}


def test_no_benchmark_edits_sys_path():
    assert [s.name for s in BENCHMARKS.glob("*.py") if "sys.path" in s.read_text()] == []
