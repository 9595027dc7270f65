"""Where a server's event loop spends its CPU per request, under one sample per request.

    python benchmarks/event_loop_profile.py --bundle models/default/bundle
    python benchmarks/event_loop_profile.py --bundle models/default/bundle --source ../before  # another checkout

Starts `rewardserve serve` (from this checkout or `--source`), warms it up, then sends
`--sequences` distinct HH items from `--concurrency` clients, one item a request (as OpenRLHF
and verl send them), while py-spy samples the server's main thread, the event loop. Each sample
is charged to the innermost frame that falls in a category below (HTTP parsing, JSON, pydantic
validation, FastAPI's routing and dependencies, the middleware, the pipeline's stages, logging,
metrics, asyncio's futures and tasks); the figures are ms of event-loop CPU per request.

py-spy is not a dependency of rewardserve: `pip install py-spy` in any environment and pass
its path with `--py-spy` (default: `py-spy` on PATH). It needs permission to ptrace the server.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from rewardserve.bench.load import run_load
from rewardserve.bench.process import rewardserve_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime

SAMPLES_PER_SECOND = 1000

# (category, pattern over "function (file)" frames); the innermost matching frame wins, and the
# order breaks ties within one frame.
CATEGORIES = [
    ("logging (access log)", r"\((logging/|.*service/logs\.py)"),
    ("metrics (prometheus_client)", r"\(.*prometheus_client/"),
    ("JSON encode/decode", r"\((json/|.*orjson|.*fastapi/encoders\.py)|dumps|render \(.*starlette/responses\.py"),
    ("pydantic validation/serialization", r"\(.*pydantic"),
    (
        "middleware (access log, keys, early 503/429, body limit)",
        r"\(.*service/(access_log|middleware|auth|limits)\.py",
    ),
    # The request path's own code: routes, the pipeline and its stages (before the reshaping,
    # app.py, scoring.py and inputs.py held it).
    (
        "request path (routes, pipeline, stages)",
        r"\(.*service/(routes|pipeline|validate|admit|render|tokenize|respond|app|scoring|inputs)\.py",
    ),
    ("batcher (queue, futures it sets)", r"\(.*service/(batcher|cache)\.py"),
    ("FastAPI/Starlette routing, dependencies", r"\(.*(fastapi|starlette)/"),
    ("HTTP parsing and writing (uvicorn, httptools)", r"\(.*(uvicorn|httptools)"),
    ("asyncio (tasks, futures, executor hops)", r"\(.*(asyncio/(?!runners)|concurrent/futures)"),
    # Samples whose innermost Python frame is the loop's entry are uvloop's own C code: socket
    # reads and writes, callbacks, timers.
    ("uvloop (sockets, callbacks; C code under the loop)", r"\(.*(asyncio/runners\.py|uvloop)"),
]


def categorise(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):  # innermost first
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def profile(bundle: Path, source: Path | None, sequences: int, concurrency: int, py_spy: str) -> None:
    runtime = BundleRuntime(bundle)
    items = hh_items(runtime.encoder, 512)
    warm_up, load = items[:256], items[256 : 256 + sequences]
    with rewardserve_process(bundle, source=source) as server, tempfile.TemporaryDirectory() as folder:
        run_load(server.url, warm_up, concurrency, 1, "warm-up")
        out = Path(folder) / "stacks.txt"
        command = [py_spy, "record", "--pid", str(server.process.pid), "--rate", str(SAMPLES_PER_SECOND)]
        command += ["--format", "raw", "--output", str(out), "--threads", "--nonblocking"]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        started = time.perf_counter()
        result = run_load(server.url, load, concurrency, 1, f"{concurrency} x 1")
        seconds = time.perf_counter() - started
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples on an interrupt
        _, errors = spy.communicate(timeout=60)
        if not out.is_file():
            raise SystemExit(f"py-spy wrote nothing: {errors.decode(errors='replace')[-2000:]}")
        counts = event_loop_samples(out.read_text(), server.process.pid)
    requests = len(result.latencies)
    total = sum(counts.values())
    print(
        f"{requests} requests of 1 item in {seconds:.1f} s ({result.sequences_per_second:.1f} seq/s), "
        f"errors {result.errors}"
    )
    print(f"event loop: {total / SAMPLES_PER_SECOND / requests * 1000:.3f} ms of CPU per request, by category:")
    for name, n in counts.most_common():
        print(f"  {name:<55} {n / SAMPLES_PER_SECOND / requests * 1000:7.3f} ms  ({n / total:5.1%})")


def event_loop_samples(stacks: str, pid: int) -> collections.Counter[str]:
    """Samples of the main thread (its id is the process id) by category, from py-spy's raw
    format: `thread (TID): NAME;frame (file:line);... COUNT` a line."""
    counts: collections.Counter[str] = collections.Counter()
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack.startswith(f"thread ({pid})"):
            counts[categorise(stack)] += int(count)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--source", type=Path, help="a checkout of rewardserve to serve from (default: this one)")
    parser.add_argument("--sequences", type=int, default=2048)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--py-spy", default="py-spy")
    args = parser.parse_args()
    profile(args.bundle, args.source, args.sequences, args.concurrency, args.py_spy)


if __name__ == "__main__":
    main()
