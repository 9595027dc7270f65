"""`rewardserve soak`: offer a multiple of the server's capacity, open loop, and watch it hold.

First the capacity: closed-loop clients for a few seconds, in answered sequences per second.
Then requests are launched on a fixed schedule at `factor` times that rate, whatever comes
back, as clients of a shared service do; the server must answer the excess with fast 429s,
answer everything it accepts, and keep its memory flat. Every request carries distinct HH
texts (a counter in the prompt), so the duplicate cache answers nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from rewardserve.bench.process import ServerProcess, rewardserve_process
from rewardserve.bench.workload import Item, hh_items
from rewardserve.bundle import BundleRuntime

TRANSPORT_ERROR = 0  # the status recorded when no HTTP answer came back


@dataclass
class Outcome:
    status: int
    seconds: float  # as the client saw it


@dataclass
class LoadReport:
    capacity: float  # answered sequences per second, closed loop
    offered: float  # sequences per second launched
    seconds: float
    items_per_request: int
    outcomes: list[Outcome] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    peak_rss: int = 0
    not_launched: int = 0  # launches skipped because the client's own connection cap was reached
    server_side: list[Outcome] = field(default_factory=list)  # from the server's access log

    def count(self, status: int) -> int:
        return sum(o.status == status for o in self.outcomes)

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    def latency_ms(self, status: int, percentile: float, server_side: bool = False) -> float:
        outcomes = self.server_side if server_side else self.outcomes
        seconds = [o.seconds for o in outcomes if o.status == status]
        return float(np.percentile(seconds, percentile) * 1000) if seconds else float("nan")

    @property
    def server_errors(self) -> int:
        return sum(o.status >= 500 or o.status == TRANSPORT_ERROR for o in self.outcomes)

    @property
    def answered_per_second(self) -> float:
        return self.count(200) * self.items_per_request / self.seconds

    def rss_growth(self) -> int:
        """Resident memory at the end minus at the end of the first tenth (once warm)."""
        warm = [bytes_ for t, bytes_ in self.rss if t >= self.seconds / 10]
        return warm[-1] - warm[0] if len(warm) >= 2 else 0

    def render(self) -> str:
        mib = 2**20
        statuses = ", ".join(f"{s or 'transport error'}: {n}" for s, n in sorted(self.statuses().items()))
        lines = [
            f"capacity {self.capacity:.1f} seq/s; offered {self.offered:.1f} seq/s "
            f"({self.offered / self.capacity:.1f}x) for {self.seconds:.0f} s, {self.items_per_request} items a request",
            f"answers: {statuses}; not launched (client cap): {self.not_launched}",
            f"answered {self.answered_per_second:.1f} seq/s "
            f"({self.answered_per_second / self.capacity:.2f} of capacity)",
            f"429 latency ms: p50 {self.latency_ms(429, 50):.1f}, p99 {self.latency_ms(429, 99):.1f}, "
            f"max {self.latency_ms(429, 100):.1f} (in the server: p50 {self.latency_ms(429, 50, True):.1f}, "
            f"p99 {self.latency_ms(429, 99, True):.1f}, max {self.latency_ms(429, 100, True):.1f})",
            f"200 latency ms: p50 {self.latency_ms(200, 50):.0f}, p99 {self.latency_ms(200, 99):.0f}",
            f"server RSS: peak {self.peak_rss / mib:.0f} MiB; growth after warm-up {self.rss_growth() / mib:+.1f} MiB",
            f"5xx and transport errors: {self.server_errors}",
        ]
        return "\n".join(lines)


class Requests:
    """Endless distinct request bodies from HH items: a counter makes every prompt new."""

    def __init__(self, items: list[Item], per_request: int) -> None:
        self._items = itertools.cycle(items)
        self._numbers = itertools.count()
        self.per_request = per_request

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        batch = []
        for item in itertools.islice(self._items, self.per_request):
            batch.append({"prompt": f"{item['prompt']} ({next(self._numbers)})", "response": item["response"]})
        return {"items": batch}


async def _post(client: httpx.AsyncClient, body: dict) -> Outcome:
    started = time.perf_counter()
    try:
        status = (await client.post("/score", json=body)).status_code
    except httpx.TransportError:
        status = TRANSPORT_ERROR
    return Outcome(status, time.perf_counter() - started)


async def _capacity(url: str, requests: Requests, clients: int, seconds: float) -> float:
    """Answered sequences per second with `clients` closed-loop clients."""
    answered = 0
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal answered
            while time.perf_counter() < stop:
                if (await _post(client, next(requests))).status == 200:
                    answered += requests.per_request

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return answered / (time.perf_counter() - started)


async def _offer(
    server: ServerProcess, requests: Requests, report: LoadReport, max_outstanding: int, timeout: float
) -> None:
    """Launch requests at `report.offered` on a fixed schedule for `report.seconds`; sample RSS."""
    interval = requests.per_request / report.offered
    limits = httpx.Limits(max_connections=max_outstanding, max_keepalive_connections=max_outstanding)
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits) as client:
        tasks: set[asyncio.Task] = set()

        def finished(task: asyncio.Task) -> None:
            tasks.discard(task)
            report.outcomes.append(task.result())

        started = time.perf_counter()
        bar = tqdm(total=round(report.seconds), desc="overload", unit="s", leave=False)
        next_sample = 0.0
        for launch in itertools.count():
            due = started + launch * interval  # the schedule does not wait for answers
            now = time.perf_counter()
            if due - started >= report.seconds:
                break
            if now - started >= next_sample:
                report.rss.append((now - started, server.memory()[0]))
                bar.update(min(round(now - started), bar.total) - bar.n)
                next_sample += 0.5
            # Always yield, also when behind schedule: the launched requests run on this loop.
            await asyncio.sleep(max(due - now, 0.0))
            if len(tasks) >= max_outstanding:
                report.not_launched += 1
                continue
            task = asyncio.create_task(_post(client, next(requests)))
            tasks.add(task)
            task.add_done_callback(finished)
        await asyncio.gather(*tasks)
        bar.close()
    report.peak_rss = server.memory()[1]


def overload(
    server: ServerProcess,
    items: list[Item],
    *,
    factor: float = 4.0,
    seconds: float = 30.0,
    per_request: int = 16,
    capacity_seconds: float = 10.0,
    capacity_clients: int = 8,
    max_outstanding: int = 512,
    timeout: float = 300.0,
) -> LoadReport:
    """Measure `server`'s capacity, then offer `factor` times it for `seconds`."""
    requests = Requests(items, per_request)
    capacity = asyncio.run(_capacity(server.url, requests, capacity_clients, capacity_seconds))
    report = LoadReport(capacity, factor * capacity, seconds, per_request)
    asyncio.run(_offer(server, requests, report, max_outstanding, timeout))
    report.server_side = _access_log(server)
    return report


def _access_log(server: ServerProcess) -> list[Outcome]:
    """Each scoring request's status and latency as the server logged them (JSON access lines)."""
    outcomes = []
    for line in server.log_text().splitlines():
        if line.startswith("{") and '"rewardserve.access"' in line:
            entry = json.loads(line)
            if entry["path"] == "/score":
                outcomes.append(Outcome(entry["status"], entry["latency_ms"] / 1000))
    return outcomes


def soak(bundle: Path, *, factor: float, seconds: float, per_request: int, max_outstanding: int) -> int:
    """`rewardserve soak`: start a server on `bundle` (REWARDSERVE_* settings apply), overload
    it, print the report. `max_outstanding` must exceed the server's queue in requests
    (max_queued_sequences / per_request), or the client, not the server, bounds the load."""
    _allow_sockets(max_outstanding + 64)
    items = hh_items(BundleRuntime(bundle).encoder, max_tokens=512)
    with rewardserve_process(bundle) as server:
        report = overload(
            server, items, factor=factor, seconds=seconds, per_request=per_request, max_outstanding=max_outstanding
        )
    print(report.render())
    return 1 if report.server_errors else 0


def _allow_sockets(count: int) -> None:
    """Raise this process's open-file limit (soft, up to the hard one) for `count` connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
