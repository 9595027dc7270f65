"""Closed-loop HTTP load: N clients, each sending its next request as soon as the last returns."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from rewardserve.bench.workload import Item

TIMING_HEADERS = ("X-Tokenization-Time", "X-Queue-Time", "X-Inference-Time", "X-Total-Time")

# How a server is asked to score items: the path and the JSON body (a peer's API, for benchmarks).
ScoreApi = tuple[str, Callable[[list[Item]], dict]]
REWARDSERVE_SCORE: ScoreApi = ("/score", lambda items: {"items": items})


@dataclass(frozen=True)
class LoadResult:
    sequences: int
    seconds: float
    latencies: np.ndarray  # per request, seconds, as the client saw them
    errors: int
    server_ms: dict[str, np.ndarray]  # per request, the server's own timing headers

    def server_median_ms(self, header: str) -> float:
        return float(np.median(self.server_ms[header])) if len(self.server_ms.get(header, ())) else float("nan")

    @classmethod
    def combine(cls, results: list[LoadResult]) -> LoadResult:
        headers = {h for r in results for h in r.server_ms}
        return cls(
            sum(r.sequences for r in results),
            sum(r.seconds for r in results),
            np.concatenate([r.latencies for r in results]),
            sum(r.errors for r in results),
            {h: np.concatenate([r.server_ms.get(h, np.empty(0)) for r in results]) for h in headers},
        )

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds

    def latency_ms(self, percentile: float) -> float:
        return float(np.percentile(self.latencies, percentile) * 1000)


async def _run(
    url: str, requests: list[list[Item]], concurrency: int, label: str, api: ScoreApi = REWARDSERVE_SCORE
) -> LoadResult:
    # aiohttp, as verl's reward loop uses: the load generator shares the server's cores, and
    # measured at 128 connections one shared httpx AsyncClient spent 4-9 ms of CPU per request
    # (its pool), one client per connection 2 ms, aiohttp 0.4 ms.
    try:
        import aiohttp
    except ModuleNotFoundError:
        raise SystemExit("rewardserve bench needs aiohttp: pip install 'rewardserve[bench]'") from None

    path, body = api
    pending = iter(requests)  # shared: each client takes the next request when it is free
    latencies: list[float] = []
    server_ms: dict[str, list[float]] = defaultdict(list)
    errors = 0
    bar = tqdm(total=sum(map(len, requests)), desc=label, unit="seq", leave=False)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def client_loop() -> None:
            nonlocal errors
            for items in pending:
                started = time.perf_counter()
                async with session.post(path, json=body(items)) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                errors += response.status != 200
                for header in TIMING_HEADERS:
                    if header in response.headers:
                        server_ms[header].append(float(response.headers[header]))
                bar.update(len(items))

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    bar.close()
    timings = {header: np.array(values) for header, values in server_ms.items()}
    return LoadResult(sum(map(len, requests)), seconds, np.array(latencies), errors, timings)


def run_load(
    url: str, items: list[Item], concurrency: int, per_request: int, label: str, api: ScoreApi = REWARDSERVE_SCORE
) -> LoadResult:
    requests = [items[i : i + per_request] for i in range(0, len(items), per_request)]
    return run_requests(url, requests, concurrency, label, api)


def run_requests(
    url: str, requests: list[list], concurrency: int, label: str, api: ScoreApi = REWARDSERVE_SCORE
) -> LoadResult:
    """Requests made up already (each a list of items, its body `api`'s), `concurrency` in flight."""
    return asyncio.run(_run(url, requests, concurrency, label, api))


def run_together(loads: list[tuple[str, list[list], int, str, ScoreApi]]) -> list[LoadResult]:
    """Several loads at once, each (url, requests, concurrency, label, api) as `run_requests`
    takes them: what each served while the others ran."""

    async def together() -> list[LoadResult]:
        return list(await asyncio.gather(*(_run(*load) for load in loads)))

    return asyncio.run(together())


def one_at_a_time(url: str, items: list[Item], label: str) -> LoadResult:
    """1-item requests, one after another, on an otherwise idle server."""
    return asyncio.run(_run(url, [[item] for item in items], 1, label))


Scrape = dict[str, float]


def scrape(url: str) -> Scrape:
    """Every sample of the server's /metrics, keyed `name{label="value",...}`."""
    samples: Scrape = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@dataclass(frozen=True)
class ServerCounts:
    """What the server's engine did between two scrapes."""

    batches: float
    sequences: float
    batch_tokens: float
    padding_tokens: float
    batch_sizes: dict[str, float]  # "<= bucket" -> engine calls

    @property
    def padding_ratio(self) -> float:
        return self.padding_tokens / self.batch_tokens if self.batch_tokens else 0.0

    @classmethod
    def combine(cls, counts: list[ServerCounts]) -> ServerCounts:
        sizes: dict[str, float] = {}
        for c in counts:
            for bound, n in c.batch_sizes.items():
                sizes[bound] = sizes.get(bound, 0.0) + n
        return cls(
            sum(c.batches for c in counts),
            sum(c.sequences for c in counts),
            sum(c.batch_tokens for c in counts),
            sum(c.padding_tokens for c in counts),
            sizes,
        )


def server_counts(before: Scrape, after: Scrape) -> ServerCounts:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    cumulative = defaultdict(float)
    for name in after:
        if name.startswith("rewardserve_batch_size_bucket{"):
            cumulative[name.split('"')[1]] = delta(name)
    sizes, below = {}, 0.0
    for bound, count in sorted(cumulative.items(), key=lambda kv: float(kv[0])):
        sizes[bound] = count - below
        below = count
    return ServerCounts(
        delta("rewardserve_batch_size_count"),
        delta("rewardserve_batch_size_sum"),
        delta("rewardserve_batch_tokens_sum"),
        delta("rewardserve_padding_tokens_total"),
        sizes,
    )
