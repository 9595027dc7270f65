"""The server on loopback (uvicorn in a thread, the tiny bundle's real ONNX Runtime session):
client disconnects, the duplicate cache through HTTP, timing headers and metrics."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from live import Server, free_port, serve, wait_for

from rewardserve.service import Settings

ITEMS = [
    {"prompt": "\n\nHuman: What is the capital of France?", "response": "Paris."},
    {"prompt": "\n\nHuman: What is the capital of France?", "response": "I like turtles " * 20},
    {"prompt": "\n\nHuman: Hi", "response": "Hello! How can I help you today?"},
]


@pytest.fixture
def uncached_server(tiny_bundle) -> Iterator[Server]:
    yield from serve(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0))


@pytest.fixture
def cached_server(tiny_bundle) -> Iterator[Server]:
    yield from serve(Settings(bundle=tiny_bundle, port=free_port(), cache_size=1000))


def raw_score_request(url: str, items: list[dict]) -> socket.socket:
    """Send a /score request on a raw socket and return it without reading the answer."""
    body = httpx.Request("POST", f"{url}/score", json={"items": items})
    host, port = body.url.host, body.url.port
    sock = socket.create_connection((host, port))
    head = f"POST /score HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body.read())}\r\n\r\n".encode() + body.read())
    return sock


def test_a_disconnected_clients_queued_sequences_are_never_computed(uncached_server):
    server = uncached_server
    gate = server.gate_engine()
    busy = threading.Thread(target=httpx.post, args=(f"{server.url}/score",), kwargs={"json": {"items": ITEMS[:1]}})
    busy.start()
    assert gate.entered.wait(timeout=10), "first request never reached the engine"

    leaving = raw_score_request(server.url, ITEMS * 2)  # 6 sequences, queued behind the busy engine
    wait_for(lambda: server.metric("rewardserve_queue_depth") == 6, "6 queued sequences")
    leaving.close()
    wait_for(lambda: server.metric("rewardserve_dropped_sequences_total") == 6, "the 6 sequences to be dropped")

    gate.opened.set()
    busy.join(timeout=30)
    assert gate.batches == [1]  # only the first request's sequence ever ran
    wait_for(lambda: server.metric("rewardserve_requests_total", endpoint="/score", status="499") == 1, "499 count")
    assert server.metric("rewardserve_queue_depth") == 0
    assert httpx.post(f"{server.url}/score", json={"items": ITEMS}).status_code == 200  # still serving


def test_requests_arriving_while_the_engine_is_busy_are_batched_together(uncached_server):
    server = uncached_server
    gate = server.gate_engine()
    first = threading.Thread(target=httpx.post, args=(f"{server.url}/score",), kwargs={"json": {"items": ITEMS[:1]}})
    first.start()
    assert gate.entered.wait(timeout=10)
    results: dict[int, list[float]] = {}

    def client(i: int) -> None:
        item = {"prompt": f"\n\nHuman: question {i}?", "response": "answer " * (i + 1)}
        results[i] = httpx.post(f"{server.url}/score", json={"items": [item, item]}, timeout=30).json()["rewards"]

    clients = [threading.Thread(target=client, args=(i,)) for i in range(5)]
    for thread in clients:
        thread.start()
    wait_for(lambda: server.metric("rewardserve_queue_depth") == 10, "10 queued sequences")
    gate.opened.set()
    for thread in [first, *clients]:
        thread.join(timeout=30)
    assert gate.batches == [1, 10]  # five clients' sequences in one engine call
    assert all(len(rewards) == 2 and rewards[0] == rewards[1] for rewards in results.values())
    assert len({rewards[0] for rewards in results.values()}) == 5


def test_cached_rewards_equal_computed_ones_and_the_headers_say_how_many_were_cached(cached_server, tiny_bundle):
    hits_before = cached_server.metric("rewardserve_cache_hits_total")  # warm-up's
    first = httpx.post(f"{cached_server.url}/score", json={"items": ITEMS})
    again = httpx.post(f"{cached_server.url}/score", json={"items": ITEMS[::-1] + [ITEMS[0]]})
    assert first.headers["X-Cached-Sequences"] == "0"
    assert again.headers["X-Cached-Sequences"] == "4"
    assert again.json()["rewards"] == first.json()["rewards"][::-1] + first.json()["rewards"][:1]
    assert cached_server.metric("rewardserve_cache_hits_total") - hits_before == 4

    for uncached in serve(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0)):
        fresh = httpx.post(f"{uncached.url}/score", json={"items": ITEMS}).json()["rewards"]
    assert fresh == pytest.approx(first.json()["rewards"], abs=1e-5)


def test_responses_carry_timing_headers_and_metrics_record_where_time_went(cached_server):
    response = httpx.post(f"{cached_server.url}/score", json={"items": ITEMS})
    timings = {
        name: float(response.headers[f"X-{name}-Time"]) for name in ("Tokenization", "Queue", "Inference", "Total")
    }
    assert timings["Inference"] > 0
    assert timings["Tokenization"] + timings["Queue"] + timings["Inference"] <= timings["Total"]
    metric = cached_server.metric
    assert metric("rewardserve_sequences_total", endpoint="/score", status="200") == 3
    for histogram in ("tokenization", "queue", "inference", "request"):
        assert (
            metric(
                f"rewardserve_{histogram}_duration_seconds_count",
                **({"endpoint": "/score"} if histogram == "request" else {}),
            )
            > 0
        )
    assert metric("rewardserve_batch_tokens_sum") > 0
    assert 0 <= metric("rewardserve_padding_tokens_total") < metric("rewardserve_batch_tokens_sum")
    assert metric("rewardserve_batch_padding_ratio_count") > 0
