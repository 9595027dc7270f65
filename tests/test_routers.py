"""Scale-out behind a real router: the vLLM Router's own binary (PyPI `vllm-router`) in front of
two `rewardserve serve` replicas of one bundle, as RL users run it when one machine is not enough.

- It forwards `/score` unchanged (it needs only `GET /health` of a worker), alternating between
  the replicas (`--policy round_robin`), and the rewards are the replicas' own.
- A replica killed under it: until its next health check (every 60 s by default) the router
  sends every other request to the dead replica and answers 502. Our clients retry a 502 as they
  retry a refused connection, so no request of theirs is lost."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rewardserve.bench.load import scrape
from rewardserve.bench.process import ServerProcess, free_port, rewardserve_process, server_process
from rewardserve.client import Retry, RewardClient

ROUTER = shutil.which("vllm-router") or str(Path(sys.executable).parent / "vllm-router")
ITEMS = [{"prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "response": f" answer {i}"} for i in range(12)]


@contextlib.contextmanager
def vllm_router(workers: list[str]) -> Iterator[ServerProcess]:
    port = free_port()
    command = [ROUTER, "--worker-urls", *workers, "--policy", "round_robin", "--port", str(port)]
    with server_process(command, port, "vllm-router", ready_path="/health") as router:
        yield router


@pytest.fixture
def replicas(tiny_bundle) -> Iterator[list[ServerProcess]]:
    with rewardserve_process(tiny_bundle) as first, rewardserve_process(tiny_bundle) as second:
        yield [first, second]


def served(server: ServerProcess) -> float:
    """/score requests a replica answered (200)."""
    return scrape(server.url).get('rewardserve_requests_total{endpoint="/score",status="200"}', 0.0)


def test_through_the_vllm_router_rewards_are_the_replicas_own_and_requests_alternate(replicas):
    own = httpx.post(f"{replicas[0].url}/score", json={"items": ITEMS}).json()["rewards"]
    before = [served(replica) for replica in replicas]
    with vllm_router([replica.url for replica in replicas]) as router:
        through = [httpx.post(f"{router.url}/score", json={"items": ITEMS}).json()["rewards"] for _ in range(4)]
    assert all(rewards == pytest.approx(own, abs=1e-6) for rewards in through)
    assert [served(replica) - b for replica, b in zip(replicas, before, strict=True)] == [2, 2]


def test_a_replica_killed_behind_the_router_loses_no_request_of_our_clients(replicas):
    own = httpx.post(f"{replicas[0].url}/score", json={"items": ITEMS}).json()["rewards"]
    with vllm_router([replica.url for replica in replicas]) as router:
        replicas[1].process.send_signal(signal.SIGKILL)
        replicas[1].process.wait(timeout=30)
        raw = [httpx.post(f"{router.url}/score", json={"items": ITEMS[:1]}).status_code for _ in range(4)]
        with RewardClient(router.url, retry=Retry(backoff=0.05)) as client:
            rewards = [client.score([item["prompt"]], [item["response"]])[0] for item in ITEMS]
    assert 502 in raw  # the router still sends requests to the dead replica
    assert rewards == pytest.approx(own, abs=1e-6)
