"""MicroBatcher without HTTP, on a deterministic engine: a sequence's reward is the sum of its ids
(so a sequence of n ones scores n)."""

import asyncio

import numpy as np
import pytest

from rewardserve.bundle import EncodedSequence
from rewardserve.scoring.batcher import MicroBatcher, length_window
from rewardserve.scoring.cache import RewardCache
from rewardserve.scoring.errors import ShuttingDownError
from rewardserve.scoring.metrics import Metrics

DIGEST = "ab" * 32


def seq(length: int, fill: int = 1, response_start: int = 1) -> EncodedSequence:
    return EncodedSequence(np.full(length, fill, dtype=np.int64), response_start=response_start)


class SumEngine:
    def __init__(self, fail_when_length: int | None = None):
        self.batches: list[list[int]] = []
        self.fail_when_length = fail_when_length

    def __call__(self, sequences):
        self.batches.append([len(s) for s in sequences])
        if self.fail_when_length in self.batches[-1]:
            raise RuntimeError("engine failure")
        return np.array([s.ids.sum() for s in sequences], dtype=np.float32)

    @property
    def computed(self) -> list[int]:
        return [n for batch in self.batches for n in batch]


async def run_with(
    engine, work, max_batch_size=8, max_batch_tokens=10_000, cache_size=0, metrics=None, length_bucket=1
):
    """Run `work(batcher)` against a started batcher. Requests made before `work` first awaits
    are all queued before the worker takes its first batch."""
    cache = RewardCache(DIGEST, cache_size) if cache_size else None
    batcher = MicroBatcher(engine, max_batch_size, max_batch_tokens, metrics, cache, length_bucket=length_bucket)
    batcher.start()
    try:
        return await work(batcher)
    finally:
        await batcher.stop()


def rewards(scored) -> list[float]:
    return scored.scores.rewards.tolist()


def test_requests_from_several_clients_share_a_batch_and_each_gets_its_rewards_in_order():
    engine = SumEngine()
    requests = [[3, 5], [7], [2, 4, 6]]

    async def work(batcher):
        return await asyncio.gather(*(batcher.score([seq(n) for n in r]) for r in requests))

    results = asyncio.run(run_with(engine, work))
    assert [rewards(r) for r in results] == requests
    assert sorted(engine.batches) == [[2, 3, 4, 5, 6, 7]]


def test_a_large_client_batch_is_split_into_engine_batches_and_reassembled_in_order():
    engine = SumEngine()
    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 300, size=100)]

    async def work(batcher):
        return await batcher.score([seq(n) for n in lengths])

    assert rewards(asyncio.run(run_with(engine, work, max_batch_size=8))) == lengths
    assert len(engine.batches) == 13 and max(len(b) for b in engine.batches) == 8
    assert sorted(engine.computed) == sorted(lengths)


def test_batches_group_sequences_of_similar_length():
    engine = SumEngine()

    async def work(batcher):
        return await batcher.score([seq(n) for n in [5, 100, 6, 101, 7, 102]])

    assert rewards(asyncio.run(run_with(engine, work, max_batch_size=3))) == [5, 100, 6, 101, 7, 102]
    assert engine.batches == [[5, 6, 7], [100, 101, 102]]


def test_with_a_length_bucket_a_batch_holds_one_bucket_of_lengths_only():
    """Each sequence is then padded to its bucket's end whoever its batch-mates are (bf16
    kernels round differently at different padded lengths)."""
    engine = SumEngine()

    async def work(batcher):
        return await batcher.score([seq(n) for n in [14, 17, 16, 30, 33, 1]])

    batcher_args = {"max_batch_size": 8}
    scored = asyncio.run(run_with(engine, work, length_bucket=16, **batcher_args))
    assert rewards(scored) == [14, 17, 16, 30, 33, 1]
    assert sorted(map(sorted, engine.batches)) == [[1, 14, 16], [17, 30], [33]]


def test_the_oldest_sequence_is_always_in_the_next_batch():
    engine = SumEngine()

    async def work(batcher):
        old = batcher.score([seq(200)])
        young = [batcher.score([seq(10)]) for _ in range(20)]
        return await asyncio.gather(old, *young)

    asyncio.run(run_with(engine, work, max_batch_size=4))
    assert 200 in engine.batches[0]


def test_batches_respect_count_and_padded_token_budget():
    engine = SumEngine()

    async def work(batcher):
        return await batcher.score([seq(n) for n in [10, 10, 10, 40, 1, 1]])

    result = asyncio.run(run_with(engine, work, max_batch_size=4, max_batch_tokens=60))
    assert rewards(result) == [10, 10, 10, 40, 1, 1]
    assert engine.batches == [[1, 10, 10, 10], [40], [1]]
    assert all(max(b) * len(b) <= 60 for b in engine.batches)


@pytest.mark.parametrize(
    ("lengths", "anchor", "max_count", "max_tokens", "window"),
    [
        ([1, 2, 3, 50, 51, 52], 3, 3, 1000, (3, 6)),  # longer neighbours add less padding than 3 -> 50
        ([1, 2, 3, 50, 51, 52], 2, 3, 1000, (0, 3)),
        ([10, 10, 10, 10], 0, 8, 30, (0, 3)),  # 3 x 10 fits 30 tokens, 4 x 10 does not
        ([500], 0, 8, 10, (0, 1)),  # the anchor alone goes even over the budget
    ],
)
def test_length_window(lengths, anchor, max_count, max_tokens, window):
    assert length_window(np.array(lengths), anchor, max_count, max_tokens) == window


def test_an_engine_error_fails_only_its_batch_and_the_batcher_keeps_serving():
    engine = SumEngine(fail_when_length=13)

    async def work(batcher):
        outcome = await asyncio.gather(batcher.score([seq(13)]), return_exceptions=True)
        good = await batcher.score([seq(4)])
        return outcome, good

    (outcome,), good = asyncio.run(run_with(engine, work, max_batch_size=1))
    assert isinstance(outcome, RuntimeError)
    assert rewards(good) == [4]


def test_sequences_of_a_cancelled_request_are_dropped_before_compute():
    engine = SumEngine()
    metrics = Metrics()

    async def work(batcher):
        first = asyncio.ensure_future(batcher.score([seq(1)]))
        cancelled = asyncio.ensure_future(batcher.score([seq(99)] * 3))
        await asyncio.sleep(0)  # both queued; the worker has not run yet
        cancelled.cancel()
        return await first

    assert rewards(asyncio.run(run_with(engine, work, metrics=metrics))) == [1]
    assert 99 not in engine.computed
    assert metrics.registry.get_sample_value("rewardserve_dropped_sequences_total") == 3


def test_queued_requests_fail_cleanly_when_the_batcher_stops():
    async def work():
        batcher = MicroBatcher(SumEngine(), 8, 10_000)  # never started: nothing runs
        pending = asyncio.ensure_future(batcher.score([seq(3)]))
        await asyncio.sleep(0)
        await batcher.stop()
        return await asyncio.gather(pending, return_exceptions=True)

    (outcome,) = asyncio.run(work())
    assert isinstance(outcome, ShuttingDownError)


def test_scored_reports_where_the_time_went():
    engine = SumEngine()

    async def work(batcher):
        started = asyncio.get_running_loop().time()
        scored = await batcher.score([seq(n) for n in range(1, 20)])
        return scored, asyncio.get_running_loop().time() - started

    scored, elapsed = asyncio.run(run_with(engine, work, max_batch_size=4))
    assert scored.inference_seconds > 0 and scored.queue_seconds >= 0
    assert scored.inference_seconds + scored.queue_seconds <= elapsed + 1e-3


# The exact-duplicate cache


def test_a_cached_sequence_is_answered_without_the_engine_and_counted_as_a_hit():
    engine = SumEngine()
    metrics = Metrics()

    async def work(batcher):
        first = await batcher.score([seq(3), seq(4, fill=2)])
        again = await batcher.score([seq(4, fill=2), seq(3), seq(5)])
        return first, again

    first, again = asyncio.run(run_with(engine, work, cache_size=100, metrics=metrics))
    assert rewards(first) == [3, 8]
    assert rewards(again) == [8, 3, 5]
    assert (first.cached, again.cached) == (0, 2)
    assert engine.computed == [3, 4, 5]
    sample = metrics.registry.get_sample_value
    assert (sample("rewardserve_cache_hits_total"), sample("rewardserve_cache_misses_total")) == (2, 3)


def test_identical_sequences_queued_together_run_once():
    engine = SumEngine()

    async def work(batcher):
        return await asyncio.gather(batcher.score([seq(6), seq(6)]), batcher.score([seq(6), seq(7)]))

    one, two = asyncio.run(run_with(engine, work, cache_size=100))
    assert rewards(one) == [6, 6] and rewards(two) == [6, 7]
    assert sorted(engine.computed) == [6, 7]


def test_a_joined_request_is_answered_when_the_request_it_joined_is_cancelled():
    engine = SumEngine()

    async def work(batcher):
        owner = asyncio.ensure_future(batcher.score([seq(50)]))
        await asyncio.sleep(0)
        joined = asyncio.ensure_future(batcher.score([seq(50)]))
        await asyncio.sleep(0)
        owner.cancel()
        return await joined

    assert rewards(asyncio.run(run_with(engine, work, cache_size=100))) == [50]
    assert engine.computed == [50]


def test_the_cache_evicts_the_least_recently_used_reward():
    cache = RewardCache(DIGEST, capacity=2)
    a, b, c = (cache.key(seq(n)) for n in (1, 2, 3))
    cache.put(a, 1.0)
    cache.put(b, 2.0)
    assert cache.get(a) == (1.0, None)  # a is now more recent than b
    cache.put(c, 3.0)
    assert (cache.get(a), cache.get(b), cache.get(c), len(cache)) == ((1.0, None), None, (3.0, None), 2)


def test_cache_keys_depend_on_the_bundle_the_ids_and_where_the_response_starts():
    cache = RewardCache(DIGEST, capacity=10)
    key = cache.key(seq(5))
    assert cache.key(seq(5)) == key
    assert RewardCache("cd" * 32, capacity=10).key(seq(5)) != key
    assert cache.key(seq(5, fill=2)) != key
    assert cache.key(seq(5, response_start=2)) != key
