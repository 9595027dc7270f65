"""Every benchmark script imports and answers --help: a benchmark nobody runs must not rot
unseen (their figures are in docs/performance.md, each with its command). The scripts import
the tests' tiny models from `rewardserve.testing`, not through sys.path edits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"

# Each script run as `python SCRIPT --help` would run it, one after another in one interpreter:
# torch and transformers are imported once, not once a script.
HELP_OF_EACH = """
import contextlib, io, json, runpy, sys, traceback
failed = {}
for script in sys.argv[1:]:
    sys.argv, out = [script, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        failed[script] = "ran without exiting"
    except SystemExit as done:
        if done.code not in (0, None) or "usage:" not in out.getvalue():
            failed[script] = f"exit {done.code}: {out.getvalue()[-500:]}"
    except BaseException:
        failed[script] = traceback.format_exc()[-1500:]
print(json.dumps(failed))
"""


def test_every_benchmark_imports_and_answers_help():
    scripts = sorted(s.name for s in BENCHMARKS.glob("*.py"))
    assert len(scripts) >= 19
    done = subprocess.run(
        [sys.executable, "-c", HELP_OF_EACH, *scripts], cwd=BENCHMARKS, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {}


def test_no_benchmark_edits_sys_path():
    assert [s.name for s in BENCHMARKS.glob("*.py") if "sys.path" in s.read_text()] == []
