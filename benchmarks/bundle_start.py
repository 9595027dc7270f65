"""Serving a multi-GB bundle: how long `rewardserve serve` takes to be ready (checksums verified,
sessions opened) and how much memory it holds, per precision, against the size of its weights.

    python benchmarks/bundle_start.py --bundle models/real-size/qwen3-0.6b/bundle
    python benchmarks/bundle_start.py --bundle BUNDLE --precisions fp32 bf16 int4

Each precision starts a fresh server process; the figures are its wall time to /ready, its
resident memory then, after it answered one /score of 16 held-out HH pairs, and its peak.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx

from rewardserve.bench.process import rewardserve_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime, load_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto"])
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/vllm_figures.py reads it)")
    args = parser.parse_args()

    manifest = load_bundle(args.bundle)
    files = {name: (args.bundle / name).stat().st_size for name in manifest.files}
    print(f"{manifest.name}: {sum(files.values()) / 1e9:.2f} GB in {len(files)} files")
    runtime = BundleRuntime(args.bundle, precision="fp32")
    items = hh_items(runtime.encoder, max_tokens=runtime.encoder.format.max_length)[:16]
    del runtime
    print(f"{'precision':<10}{'ready after':>12}{'RSS ready':>10}{'RSS':>10}{'peak RSS':>10}")
    figures = {}
    for precision in args.precisions:
        started = time.perf_counter()
        with rewardserve_process(args.bundle, {"REWARDSERVE_PRECISION": precision}) as server:
            ready = time.perf_counter() - started
            at_ready, _ = server.memory()
            httpx.post(f"{server.url}/score", json={"items": items}, timeout=600).raise_for_status()
            rss, peak = server.memory()
        print(f"{precision:<10}{ready:>11.1f}s{at_ready / 1e9:>9.2f}G{rss / 1e9:>9.2f}G{peak / 1e9:>9.2f}G")
        figures[precision] = {"ready_seconds": ready, "rss_ready": at_ready, "rss_after_score": rss, "rss_peak": peak}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
