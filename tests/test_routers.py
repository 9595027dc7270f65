"""Scale-out behind a real router: the vLLM Router's own binary (PyPI `vllm-router`) and SGLang's
Model Gateway (PyPI `smg`) in front of two `rewardserve serve` replicas of one bundle, as RL users
run them when one machine is not enough.

- It forwards `/score` unchanged (it needs only `GET /health` of a worker), alternating between
  the replicas (`--policy round_robin`), and the rewards are the replicas' own.
- A replica killed under it: until its next health check (every 60 s by default) the router
  sends every other request to the dead replica and answers 502. Our clients retry a 502 as they
  retry a refused connection, so no request of theirs is lost; nor is one of OpenRLHF's or verl's
  own clients, which retry too, while a replica drains on SIGTERM and then dies.
- SGLang's gateway registers each replica from its `/v1/models` and `/model_info`, routes only the
  OpenAI paths (`/v1/embeddings`, `/v1/classify`; 404 for `/score`), and only to workers serving
  the `model` a request names. It retries a dead replica's requests on the other one itself."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from rewardserve.bench.load import scrape
from rewardserve.bench.process import ServerProcess, free_port, rewardserve_process, server_process
from rewardserve.client import AsyncRewardClient, Retry, RewardClient

ROUTER = shutil.which("vllm-router") or str(Path(sys.executable).parent / "vllm-router")
GATEWAY = shutil.which("smg") or str(Path(sys.executable).parent / "smg")
ITEMS = [{"prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "response": f" answer {i}"} for i in range(12)]


# What the deployment docs and k8s/router set: a replica is out of rotation once `/ready` fails
# (at once on SIGTERM, while it drains), checked every few seconds rather than every 60.
HEALTH_SETTINGS = ["--health-check-endpoint", "/ready", "--health-check-interval-secs", "1"]


@contextlib.contextmanager
def vllm_router(workers: list[str], settings: tuple[str, ...] = ()) -> Iterator[ServerProcess]:
    port = free_port()
    command = [ROUTER, "--worker-urls", *workers, "--policy", "round_robin", "--port", str(port), *settings]
    command += ["--prometheus-port", str(free_port())]  # not its default 29000, which another may hold
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


def test_a_replica_stopped_under_load_loses_no_request_of_any_trainers_client(replicas):
    # Our client (/score), OpenRLHF's (/get_reward) and verl's reward-model client (/classify),
    # all retrying as they do, while one replica is sent SIGTERM (it drains, then exits), then SIGKILL.
    openrlhf = pytest.importorskip("openrlhf.utils.agent", reason="make install adds openrlhf")
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    texts = [item["prompt"] + item["response"] for item in ITEMS]
    own = httpx.post(f"{replicas[0].url}/score", json={"items": ITEMS}).json()["rewards"]
    # verl's and OpenRLHF's texts are HH transcripts, read back as the conversations they spell
    spelled = httpx.post(f"{replicas[0].url}/score", json={"items": ITEMS, "policy_format": "auto"}).json()["rewards"]
    with vllm_router([replica.url for replica in replicas], HEALTH_SETTINGS) as router:
        verl_worker = SimpleNamespace(reward_router_address=router.url.removeprefix("http://"))
        executor = openrlhf.SingleTurnAgentExecutor(remote_rm_url=[f"{router.url}/get_reward"])

        async def verl(text: str) -> float:
            answer = await RewardLoopWorker._post_request(
                verl_worker, {"input": text, "use_activation": False}, "classify"
            )
            return answer["data"][-1]["probs"][-1]

        async def ours(client: AsyncRewardClient, item: dict) -> float:
            return (await client.score([item["prompt"]], [item["response"]]))[0]

        async def openrlhf_reward(text: str) -> float:
            (shard,) = await executor._fetch_rewards_via_http([text], [""], [None])
            return shard["rewards"][0]

        async def load() -> list[float]:
            async with AsyncRewardClient(router.url, retry=Retry(backoff=0.05)) as client:
                calls = []
                for _ in range(3):
                    calls += [ours(client, item) for item in ITEMS] + [verl(text) for text in texts]
                    calls += [openrlhf_reward(text) for text in texts]
                return await asyncio.gather(*(paced(call, i) for i, call in enumerate(calls)))

        async def paced(call: Awaitable[float], i: int) -> float:
            await asyncio.sleep(i * 0.02)  # spread over the stop
            return await call

        stopper = threading.Timer(0.3, stop, args=(replicas[1],))
        stopper.start()
        rewards = asyncio.run(load())
        stopper.join()
    assert rewards == pytest.approx((own + spelled * 2) * 3, abs=1e-6)


def stop(replica: ServerProcess) -> None:
    """SIGTERM (the replica drains what it admitted, then exits), then SIGKILL if it has not."""
    replica.process.send_signal(signal.SIGTERM)
    try:
        replica.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        replica.process.kill()
        replica.process.wait()


@contextlib.contextmanager
def sglang_gateway(workers: list[str]) -> Iterator[ServerProcess]:
    port = free_port()
    command = [GATEWAY, "launch", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers]
    command += ["--policy", "round_robin", "--prometheus-port", str(free_port())]  # not the default 29000
    with server_process(command, port, "smg", ready_path="/readiness") as gateway:
        deadline = time.monotonic() + 60  # it registers workers in the background
        while httpx.get(f"{gateway.url}/readiness").json().get("healthy_workers") != len(workers):
            assert time.monotonic() < deadline, gateway.log_text()[-2000:]
            time.sleep(0.2)
        yield gateway


def embedded(url: str, model: str, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": texts}, timeout=60)


def test_through_sglangs_gateway_rewards_are_the_replicas_own_on_its_openai_paths(replicas):
    texts = [item["prompt"] + item["response"] for item in ITEMS]
    own = httpx.post(f"{replicas[0].url}/score", json={"items": ITEMS, "policy_format": "auto"}).json()["rewards"]
    name = httpx.get(f"{replicas[0].url}/v1/models").json()["data"][0]["id"]
    with sglang_gateway([replica.url for replica in replicas]) as gateway:
        through = [embedded(gateway.url, name, texts).json()["data"] for _ in range(4)]
        classified = httpx.post(f"{gateway.url}/v1/classify", json={"model": name, "input": texts[0]}).json()
        unknown_model = embedded(gateway.url, "another-model", texts[:1])
        unknown_path = httpx.post(f"{gateway.url}/score", json={"items": ITEMS[:1]})
    assert all([d["embedding"][-1] for d in data] == pytest.approx(own, abs=1e-6) for data in through)
    # the gateway re-writes the classify body without use_activation: the default, a sigmoid
    assert classified["data"][0]["probs"] == [pytest.approx(1 / (1 + math.exp(-own[0])), abs=1e-6)]
    assert (unknown_model.status_code, unknown_path.status_code) == (404, 404)


def test_the_gateway_routes_the_model_name_a_trainer_sends_when_replicas_serve_under_it(tiny_bundle):
    name = {"REWARDSERVE_SERVED_MODEL_NAME": "/models/my-reward-model"}  # verl sends reward_model.model_path
    with (
        rewardserve_process(tiny_bundle, name) as first,
        rewardserve_process(tiny_bundle, name) as second,
        sglang_gateway([first.url, second.url]) as gateway,
    ):
        answer = embedded(gateway.url, "/models/my-reward-model", [ITEMS[0]["prompt"] + ITEMS[0]["response"]])
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "/models/my-reward-model"


def test_a_replica_killed_behind_the_gateway_loses_no_request(replicas):
    texts = [item["prompt"] + item["response"] for item in ITEMS]
    name = httpx.get(f"{replicas[0].url}/v1/models").json()["data"][0]["id"]
    own = [d["embedding"][-1] for d in embedded(replicas[0].url, name, texts).json()["data"]]
    with sglang_gateway([replica.url for replica in replicas]) as gateway:
        replicas[1].process.send_signal(signal.SIGKILL)
        replicas[1].process.wait(timeout=30)
        answers = [embedded(gateway.url, name, [text]) for text in texts]
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert [a.json()["data"][0]["embedding"][-1] for a in answers] == pytest.approx(own, abs=1e-6)
