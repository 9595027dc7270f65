"""The Python clients against a live server on loopback: chunking, order, typed results,
retries on 429 that wait for Retry-After, errors that are not retried, API keys."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from live import Server, free_port, hold_engine, post_in_background, running, wait_for

from rewardserve.client import AsyncRewardClient, Comparison, Retry, RewardClient, RewardServerError
from rewardserve.service import Settings

PROMPTS = [f"\n\nHuman: question {i}?" for i in range(10)]
RESPONSES = [f"answer {'very ' * i}long" for i in range(10)]


@pytest.fixture(scope="module")
def server(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0)) as server:
        yield server


def score_requests(server: Server) -> float:
    return server.metric("rewardserve_requests_total", endpoint="/score", status="200")


def test_large_inputs_go_in_chunks_and_come_back_in_order(server):
    items = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    one_shot = httpx.post(f"{server.url}/score", json={"items": items}).json()["rewards"]
    before = score_requests(server)
    with RewardClient(server.url, chunk_size=3) as client:
        rewards = client.score(PROMPTS, RESPONSES)
    assert score_requests(server) - before == 4  # 3 + 3 + 3 + 1
    assert rewards == pytest.approx(one_shot, abs=1e-6)


def test_the_async_client_sends_chunks_concurrently_and_keeps_the_order(server):
    with RewardClient(server.url) as client:
        expected = client.score(PROMPTS, RESPONSES)

    async def run() -> list[float]:
        async with AsyncRewardClient(server.url, chunk_size=2, concurrency=3) as client:
            return await client.score(PROMPTS, RESPONSES)

    assert asyncio.run(run()) == pytest.approx(expected, abs=1e-6)


def test_chats_score_as_their_transcripts_and_extra_message_keys_are_dropped(server):
    conversations = [
        [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": r, "name": "bot"}]
        for i, r in enumerate(RESPONSES[:4])
    ]
    with RewardClient(server.url, chunk_size=3) as client:
        expected = client.score(PROMPTS[:4], RESPONSES[:4])
        assert client.score_chats(conversations) == pytest.approx(expected, abs=1e-6)

    async def run() -> list[float]:
        async with AsyncRewardClient(server.url, chunk_size=3) as client:
            return await client.score_chats(conversations)

    assert asyncio.run(run()) == pytest.approx(expected, abs=1e-6)


def test_rank_picks_the_best_of_n(server):
    with RewardClient(server.url) as client:
        ranking = client.rank(PROMPTS[0], RESPONSES[:4])
        chat_ranking = client.rank([{"role": "user", "content": "question 0?"}], RESPONSES[:4], pairwise=False)
        rewards = client.score(PROMPTS[:1] * 4, RESPONSES[:4])
    assert ranking.rewards == pytest.approx(rewards, abs=1e-6)
    assert ranking.ranking[0] == max(range(4), key=rewards.__getitem__)
    assert sum(ranking.p_best) == pytest.approx(1) and len(ranking.p_better) == 4
    assert chat_ranking.rewards == pytest.approx(rewards, abs=1e-6) and chat_ranking.p_better is None


def test_compare_gives_typed_results(server):
    with RewardClient(server.url, chunk_size=4) as client:
        results = client.compare(PROMPTS, RESPONSES, RESPONSES[::-1])
        rewards_a = client.score(PROMPTS, RESPONSES)
        rewards_b = client.score(PROMPTS, RESPONSES[::-1])
    assert all(isinstance(r, Comparison) for r in results) and len(results) == 10
    assert [r.reward_a for r in results] == pytest.approx(rewards_a, abs=1e-6)
    assert [r.reward_b for r in results] == pytest.approx(rewards_b, abs=1e-6)
    assert all(0 < r.p_a_better < 1 for r in results)


def fill_the_queue(server: Server):
    """Two 2-item requests, one held on the engine and one queued: 4 of 4 sequences in flight."""
    gate, first, _ = hold_engine(server, {"items": [{"prompt": "p", "response": "held"}] * 2})
    second, _ = post_in_background(server.url, {"items": [{"prompt": "p", "response": "queued"}] * 2})
    wait_for(lambda: server.pipeline.admission.in_flight_sequences == 4, "a full queue")
    return gate, [first, second]


def test_a_429_is_retried_after_the_servers_retry_after(tiny_bundle):
    settings = Settings(
        bundle=tiny_bundle, port=free_port(), cache_size=0, max_items_per_request=2, max_queued_sequences=4
    )
    with running(settings) as server:
        gate, held = fill_the_queue(server)
        threading.Timer(0.3, gate.opened.set).start()  # room comes back after 0.3 s
        started = time.monotonic()
        with RewardClient(server.url) as client:
            rewards = client.score(["p"] * 2, ["x", "y"])  # answered 429 first
        waited = time.monotonic() - started
        for thread in held:
            thread.join(timeout=30)
        assert len(rewards) == 2
        assert server.metric("rewardserve_requests_total", endpoint="/score", status="429") >= 1
        assert waited >= 1.0  # Retry-After is whole seconds, at least 1


def test_when_retries_are_spent_the_last_refusal_is_raised(tiny_bundle):
    settings = Settings(
        bundle=tiny_bundle, port=free_port(), cache_size=0, max_items_per_request=2, max_queued_sequences=4
    )
    with running(settings) as server:
        gate, held = fill_the_queue(server)
        with RewardClient(server.url, retry=Retry(attempts=2)) as client, pytest.raises(RewardServerError) as error:
            client.score(["p"] * 2, ["x", "y"])
        refusals = server.metric("rewardserve_requests_total", endpoint="/score", status="429")
        gate.opened.set()
        for thread in held:
            thread.join(timeout=30)
    assert (error.value.status, error.value.error_type) == (429, "overloaded")
    assert refusals == 2  # both attempts


def test_a_bad_request_is_not_retried(server):
    before = server.metric("rewardserve_requests_total", endpoint="/score", status="413")
    with RewardClient(server.url) as client, pytest.raises(RewardServerError) as error:
        client.score(["p"], ["x" * 200_000])
    assert (error.value.status, error.value.error_type) == (413, "text_too_long")
    assert "items[0].response" in error.value.message
    assert server.metric("rewardserve_requests_total", endpoint="/score", status="413") - before == 1


def test_the_api_key_is_sent(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port(), api_keys="secret")) as server:
        with RewardClient(server.url, api_key="secret") as client:
            assert len(client.score(["p"], ["r"])) == 1
        with RewardClient(server.url) as client, pytest.raises(RewardServerError) as error:
            client.score(["p"], ["r"])
    assert error.value.status == 401


def test_a_server_that_is_not_there_is_retried_then_raised():
    nobody = f"http://127.0.0.1:{free_port()}"
    with RewardClient(nobody, retry=Retry(attempts=3, backoff=0.01)) as client, pytest.raises(httpx.ConnectError):
        client.score(["p"], ["r"])


def test_backoff_grows_with_jitter_within_its_cap_and_never_undercuts_retry_after():
    retry = Retry(backoff=0.5, max_backoff=4.0)
    assert all(0 <= retry.delay(attempt, None) <= min(4.0, 0.5 * 2**attempt) for attempt in range(10))
    assert all(retry.delay(0, "3") >= 3 for _ in range(20))
