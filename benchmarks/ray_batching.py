"""In Ray Serve, whose batching serves more: rewardserve's micro-batcher or Ray Serve's `@serve.batch`?

    python benchmarks/ray_batching.py --bundle models/bench-minilm/bundle      # ~2 min on 2 cores

One replica each, on a local Ray cluster, called through its handle by the same concurrent load
(`--clients` callers, 8 HH items a request, distinct items, the cache off):

- rewardserve: `rewardserve.ray_serve.reward_app`, the core with its own batcher (every caller's
  sequences grouped by length, batches cut by tokens, the engine never idle while work waits);
- Ray Serve's batching: a deployment whose `@serve.batch` method gathers requests as they arrive
  (up to `max_batch_size` requests or `batch_wait_timeout_s`), then scores the gathered items
  with the same core offline (`scoring/offline.py`: the same reading, length-sorted batches).

Both runs take turns, `--rounds` times; medians of sequences per second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import ray
from ray import serve
from tqdm import tqdm

from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime
from rewardserve.ray_serve import reward_app
from rewardserve.scoring.offline import OfflineScoring


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
class RayBatched:
    """Ray Serve's own batching in front of the core's offline path."""

    def __init__(self, bundle: str, max_batch_size: int, wait: float) -> None:
        self.scoring = OfflineScoring(BundleRuntime(Path(bundle)))
        self.score.set_max_batch_size(max_batch_size)
        self.score.set_batch_wait_timeout_s(wait)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def score(self, requests: list[list[dict[str, Any]]]) -> list[list[float]]:
        items = [item for request in requests for item in request]
        rewards = await asyncio.to_thread(lambda: self.scoring.scores(self.scoring.read_items(items)).rewards.tolist())
        answers, start = [], 0
        for request in requests:
            answers.append(rewards[start : start + len(request)])
            start += len(request)
        return answers


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("models/default/bundle"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--sequences", type=int, default=1024, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=16, help="@serve.batch's, in requests")
    parser.add_argument("--wait", type=float, default=0.01, help="@serve.batch's batch_wait_timeout_s")
    return parser.parse_args()


async def load(call: Any, requests: list[list[dict]], clients: int, label: str) -> float:
    """Sequences per second of `requests` through `call`, `clients` at a time."""
    pending = iter(requests)
    bar = tqdm(total=sum(map(len, requests)), desc=label, unit="seq", leave=False)

    async def client() -> None:
        for items in pending:
            await call(items)
            bar.update(len(items))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    bar.close()
    return sum(map(len, requests)) / (time.perf_counter() - started)


def main() -> None:
    args = arguments()
    items = hh_items(BundleRuntime(args.bundle).encoder, max_tokens=256)
    bundle = str(args.bundle.resolve())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ours = serve.run(reward_app({"bundle": bundle, "cache_size": 0}), name="ours", route_prefix="/ours")
    theirs = serve.run(RayBatched.bind(bundle, args.max_batch_size, args.wait), name="theirs", route_prefix="/theirs")
    calls = {
        "rewardserve's batcher": lambda chunk: ours.call.remote("/score", {"items": chunk}),
        "Ray Serve's @serve.batch": lambda chunk: theirs.score.remote(chunk),
    }
    rates = asyncio.run(rounds(args, items, calls))
    serve.shutdown()
    ray.shutdown()
    print(f"\nOne Ray Serve replica, {args.clients} callers x 8 items through its handle, medians of {args.rounds}")
    print("| batching | seq/s | each round |\n| --- | --- | --- |")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")


async def rounds(args: argparse.Namespace, items: list[dict], calls: dict[str, Any]) -> dict[str, list[float]]:
    """Each call's rate in each round, the calls taking turns on the same requests."""
    for call in calls.values():  # warm-up
        await load(call, [items[i : i + 8] for i in range(0, 128, 8)], args.clients, "warm-up")
    rates: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.rounds):
        start = (r * args.sequences) % max(len(items) - args.sequences, 1)
        requests = [items[i : i + 8] for i in range(start, start + args.sequences, 8)]
        for name, call in calls.items():
            rates[name].append(await load(call, requests, args.clients, f"round {r + 1}: {name}"))
    return rates


if __name__ == "__main__":
    main()
