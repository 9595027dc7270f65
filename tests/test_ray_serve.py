"""Ray Serve as a second transport (`rewardserve.ray_serve`): two replicas of the core behind Ray
Serve's proxy answer the same HTTP API as the plain server, with the same rewards; a handle gets
them in-cluster without HTTP; and a replica killed under load loses no request."""

from __future__ import annotations

import threading

import httpx
import pytest
from live import free_port, running, wait_for

from rewardserve.client import RewardClient
from rewardserve.service import Settings

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

ITEMS = [
    {"prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "response": f" answer{' very' * i} {i}"} for i in range(10)
]


@pytest.fixture(scope="module")
def expected(tiny_bundle) -> list[float]:
    with running(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0)) as server:
        return httpx.post(f"{server.url}/score", json={"items": ITEMS}).json()["rewards"]


@pytest.fixture(scope="module")
def deployed(tiny_bundle):
    """(url, handle) of two replicas on a local Ray cluster."""
    from rewardserve.ray_serve import reward_app

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = {"bundle": str(tiny_bundle), "cache_size": 0, "threads": 1}
    handle = serve.run(reward_app(settings, num_replicas=2), name="rewardserve", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: all(httpx.get(f"{url}/ready").status_code == 200 for _ in range(8)), "both replicas", 120)
    yield url, handle
    serve.shutdown()
    ray.shutdown()


def test_two_replicas_answer_the_http_api_with_the_plain_servers_rewards(deployed, expected):
    url, _ = deployed
    for _ in range(4):  # Ray's router spreads them over both replicas
        answer = httpx.post(f"{url}/score", json={"items": ITEMS})
        assert answer.status_code == 200
        assert answer.json()["rewards"] == pytest.approx(expected, abs=1e-6)
    assert httpx.post(f"{url}/score", json={"items": []}).status_code == 422  # the same errors
    assert "rewardserve_requests_total" in httpx.get(f"{url}/metrics").text


def test_a_handle_scores_in_cluster_without_http(deployed, expected):
    from rewardserve.ray_serve.deployment import HandleError

    _, handle = deployed
    answer = handle.call.remote("/score", {"items": ITEMS}).result()
    assert answer["rewards"] == pytest.approx(expected, abs=1e-6)
    reward = handle.call.remote("/get_reward", {"query": [ITEMS[0]["prompt"] + ITEMS[0]["response"]]}).result()
    assert len(reward["rewards"]) == 1
    with pytest.raises(HandleError, match="413 too_many_items"):
        handle.call.remote("/score", {"items": ITEMS * 200}).result()


def test_a_replica_killed_under_load_loses_no_request(deployed, expected):
    url, _ = deployed
    results: list[list[float]] = []
    failures: list[Exception] = []

    def client() -> None:
        with RewardClient(url) as rewards:
            for _ in range(30):
                try:
                    results.append(rewards.score_items(ITEMS))
                except Exception as error:  # noqa: BLE001 (counted: none may fail)
                    failures.append(error)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(results) >= 8, "the load to start", 60)
    replica = next(a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"])
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    for thread in threads:
        thread.join(timeout=300)
    assert failures == [] and len(results) == 120
    assert all(r == pytest.approx(expected, abs=1e-6) for r in results)
