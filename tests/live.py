"""Servers on loopback for tests: the app under real uvicorn in a thread, with the tiny
bundle's real ONNX Runtime session, and a gate to hold its engine."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn

from rewardserve.bench.process import free_port
from rewardserve.scoring.pipeline import ScoringPipeline
from rewardserve.service import Settings, create_app

__all__ = [
    "Gate",
    "Server",
    "free_port",
    "hold_engine",
    "post_in_background",
    "running",
    "serve",
    "wait_for",
    "wait_until_ready",
]


def wait_until_ready(url: str, timeout: float, check: Callable[[], None] = lambda: None) -> None:
    """Poll `url`/ready until it answers 200; `check` runs every turn (e.g. asserts the process lives)."""
    deadline = time.monotonic() + timeout
    while True:
        check()
        assert time.monotonic() < deadline, "server never became ready"
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass
class Gate:
    """Holds every engine call until opened, and records the batch sizes that ran."""

    opened: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    batches: list[int] = field(default_factory=list)

    def wrap(self, run: Callable) -> Callable:
        def gated(batch):
            self.entered.set()
            assert self.opened.wait(timeout=30), "test never opened the gate"
            self.batches.append(len(batch.arrays["input_ids"]))
            return run(batch)

        return gated


@dataclass
class Server:
    url: str
    app: object
    headers: dict[str, str] = field(default_factory=dict)  # what /metrics needs, when it is protected

    @property
    def pipeline(self) -> ScoringPipeline:
        return self.app.state.pipeline

    @property
    def runtime(self):
        """The bundle's graph runner, under the engine."""
        return self.pipeline.batcher.engine.runtime

    def metric(self, name: str, **labels: str) -> float:
        selector = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in httpx.get(f"{self.url}/metrics", headers=self.headers).text.splitlines():
            if line.startswith(selector + " "):
                return float(line.split()[-1])
        return 0.0

    def gate_engine(self) -> Gate:
        gate = Gate()
        runtime = self.runtime
        runtime.score = gate.wrap(runtime.score)
        return gate


def serve(settings: Settings, headers: dict[str, str] | None = None) -> Iterator[Server]:
    """The app on `settings.port` until the generator is closed."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    # Warmed up before the first HTTP look, so that probes of the warm-up (503) count in no test's metrics.
    wait_for(lambda: all(p.admission.warmed_up for p in app.state.models), "the warm-up", timeout=30)
    wait_until_ready(url, timeout=30)
    yield Server(url, app, headers or {})
    server.should_exit = True
    thread.join(timeout=30)


running = contextlib.contextmanager(serve)  # `with running(settings) as server:` outside fixtures


def post_in_background(url: str, body: dict, headers: dict | None = None) -> tuple[threading.Thread, dict]:
    """POST /score on a thread; the dict gets the answer's status, body and headers."""
    answer: dict = {}

    def run() -> None:
        response = httpx.post(f"{url}/score", json=body, headers=headers, timeout=30)
        answer.update(status=response.status_code, body=response.json(), headers=response.headers)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answer


def hold_engine(server: Server, body: dict) -> tuple[Gate, threading.Thread, dict]:
    """A request whose batch is on the engine, held there until the gate opens."""
    gate = server.gate_engine()
    thread, answer = post_in_background(server.url, body)
    assert gate.entered.wait(timeout=10), "the request never reached the engine"
    return gate, thread, answer
