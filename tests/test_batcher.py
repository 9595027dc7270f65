"""MicroBatcher without HTTP, on a deterministic engine: the reward of a sequence is its length."""

import asyncio

import numpy as np

from rewardserve.bundle import EncodedPair
from rewardserve.service.batcher import MicroBatcher


def seq(length: int) -> EncodedPair:
    return EncodedPair(np.ones(length, dtype=np.int64), response_start=1)


class LengthEngine:
    def __init__(self, fail_when_length: int | None = None):
        self.batches: list[list[int]] = []
        self.fail_when_length = fail_when_length

    def __call__(self, sequences):
        lengths = [len(s) for s in sequences]
        self.batches.append(lengths)
        if self.fail_when_length in lengths:
            raise RuntimeError("engine failure")
        return np.array(lengths, dtype=np.float32)


async def run_with(engine, coro_factory, **limits):
    batcher = MicroBatcher(engine, limits.get("max_batch_size", 8), limits.get("max_batch_tokens", 10_000))
    batcher.start()
    try:
        return await coro_factory(batcher)
    finally:
        await batcher.stop()


def test_concurrent_requests_are_batched_together_and_answered_in_order():
    engine = LengthEngine()
    requests = [[3, 5], [7], [2, 4, 6]]

    async def go(batcher):
        return await asyncio.gather(*(batcher.score([seq(n) for n in r]) for r in requests))

    results = asyncio.run(run_with(engine, go))
    assert [r.tolist() for r in results] == requests
    assert engine.batches == [[3, 5, 7, 2, 4, 6]]


def test_batches_respect_count_and_padded_token_budget():
    engine = LengthEngine()

    async def go(batcher):
        return await batcher.score([seq(n) for n in [10, 10, 10, 40, 1, 1]])

    result = asyncio.run(run_with(engine, go, max_batch_size=4, max_batch_tokens=60))
    assert result.tolist() == [10, 10, 10, 40, 1, 1]
    # [10,10,10,40] would pad to 160 tokens; 40 alone fits; then the rest.
    assert engine.batches == [[10, 10, 10], [40], [1, 1]]
    assert all(max(b) * len(b) <= 60 or len(b) == 1 for b in engine.batches)


def test_an_engine_error_fails_only_its_batch_and_the_batcher_keeps_serving():
    engine = LengthEngine(fail_when_length=13)

    async def go(batcher):
        bad = batcher.score([seq(13)])
        outcome = await asyncio.gather(bad, return_exceptions=True)
        good = await batcher.score([seq(4)])
        return outcome, good

    (outcome,), good = asyncio.run(run_with(engine, go, max_batch_size=1))
    assert isinstance(outcome, RuntimeError)
    assert good.tolist() == [4]


def test_sequences_of_a_cancelled_request_are_dropped_before_compute():
    engine = LengthEngine()

    async def go(batcher):
        first = asyncio.ensure_future(batcher.score([seq(1)]))
        cancelled = asyncio.ensure_future(batcher.score([seq(99)] * 3))
        await asyncio.sleep(0)  # both queued; the worker has not run yet
        cancelled.cancel()
        return await first

    assert asyncio.run(run_with(engine, go)).tolist() == [1]
    assert 99 not in [n for batch in engine.batches for n in batch]
