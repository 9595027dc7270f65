"""Does a served reward depend on its batch-mates, and is it a continuous number? Held-out HH
items scored by `rewardserve serve` with its defaults (precision auto) and the duplicate cache
off: each item alone, then all of them in one /score request, which the batcher runs as
length-grouped batches of mixed lengths. Prints the largest move of a reward between the two,
the share of rewards that are exactly bf16 numbers (8 significant bits), and how many distinct
values distinct texts got.

    python benchmarks/batch_invariance.py --bundle models/default/bundle            # ~1 min
    python benchmarks/batch_invariance.py --bundle models/decoder-gate/bundle-auto

Optionally against the rewardserve of an earlier commit (`--today`, a worktree of it), in the
same run. With `--throughput N`, what the length buckets cost: N distinct items served at
64 clients x 8 items and 128 clients x 1 item with the default buckets and with
REWARDSERVE_LENGTH_BUCKET=1 (plain length grouping), rounds alternating, medians of 3.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import httpx
import numpy as np

from rewardserve.bench.load import run_load
from rewardserve.bench.process import rewardserve_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.engine_choice import Machine


def bf16_share(rewards: np.ndarray) -> float:
    """The share of `rewards` whose float32 bits end in 16 zeros: exactly a bf16 number."""
    return float(np.mean(rewards.astype(np.float32).view(np.uint32) & 0xFFFF == 0))


def measure(bundle: Path, items: list[dict], source: Path | None) -> dict[str, float]:
    with rewardserve_process(bundle, {"REWARDSERVE_CACHE_SIZE": "0"}, source) as server:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            alone = [client.post("/score", json={"items": [item]}).json()["rewards"][0] for item in items]
            together = client.post("/score", json={"items": items}).json()["rewards"]
        log = server.log_text()
    alone, together = np.array(alone), np.array(together)
    said = [line for line in log.splitlines() if "engine: " in line or "length buckets" in line]
    served = " | ".join(line.split("rewardserve", 1)[-1].strip()[:100] for line in said)
    return {
        "max |alone - in the batch|": float(np.abs(alone - together).max()),
        "median |alone - in the batch|": float(np.median(np.abs(alone - together))),
        "share of rewards that are bf16 numbers": bf16_share(alone),
        "distinct rewards": len(set(alone.tolist())),
        "reward sd": float(alone.std()),
        "start log": served,
    }


SHAPES = {"64 x 8": (64, 8), "128 x 1": (128, 1)}


def throughput(bundle: Path, items: list[dict], rounds: int = 3) -> None:
    """Served sequences/s with length buckets (the default) and without, side by side."""
    settings = {"length buckets (default)": {}, "LENGTH_BUCKET=1": {"REWARDSERVE_LENGTH_BUCKET": "1"}}
    rates: dict[tuple[str, str], list[float]] = {}
    for name, env in settings.items():
        with rewardserve_process(bundle, {"REWARDSERVE_CACHE_SIZE": "0", **env}) as server:
            run_load(server.url, items[:256], 64, 8, f"{name} warm-up")
            for number in range(rounds):
                for shape, (clients, per_request) in SHAPES.items():
                    result = run_load(server.url, items, clients, per_request, f"round {number}: {name} {shape}")
                    rates.setdefault((name, shape), []).append(result.sequences_per_second)
    print(f"\nserved sequences/s, {len(items)} distinct items, median of {rounds} rounds:")
    for shape in SHAPES:
        with_buckets, without = (statistics.median(rates[(name, shape)]) for name in settings)
        print(f"  {shape}: buckets {with_buckets:.1f}, LENGTH_BUCKET=1 {without:.1f}: {with_buckets / without:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/default/bundle"))
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=512, help="longest item, untruncated")
    parser.add_argument("--today", type=Path, help="a worktree of an earlier commit, measured the same way")
    parser.add_argument("--throughput", type=int, default=0, help="items for the buckets' cost (0: not measured)")
    args = parser.parse_args()

    runtime = BundleRuntime(args.bundle, precision="fp32")
    every = hh_items(runtime.encoder, args.max_tokens)
    items = every[: args.items]
    lengths = [len(s) for s in runtime.encoder.encode([i["prompt"] for i in items], [i["response"] for i in items])]
    del runtime
    print(f"{Machine.this().describe()}; {len(items)} distinct held-out items, {min(lengths)}-{max(lengths)} tokens")
    for label, source in (("this commit", None), ("--today", args.today)):
        if label == "this commit" or source is not None:
            print(f"\n{label}:")
            for name, value in measure(args.bundle, items, source).items():
                print(f"  {name}: {value:.3g}" if isinstance(value, float) else f"  {name}: {value}")
    if args.throughput:
        throughput(args.bundle, every[args.items : args.items + args.throughput])


if __name__ == "__main__":
    main()
