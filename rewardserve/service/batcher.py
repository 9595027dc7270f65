"""MicroBatcher: per-sequence entries from concurrent requests, re-batched into engine calls.

A request's sequences are queued as separate entries; whenever the engine is free, the worker
takes queued entries in arrival order up to a count and a padded-token budget, runs them in
one engine call on a worker thread and hands each reward back to its request. Sequences of a
request whose caller has gone (its future cancelled) are dropped before they cost compute.

Knows nothing of HTTP; the engine is any callable from sequences to rewards.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rewardserve.bundle import EncodedPair
from rewardserve.service.metrics import Metrics

Engine = Callable[[Sequence[EncodedPair]], np.ndarray]


class _Request:
    """Rewards of one caller's sequences, filled in as their batches finish."""

    def __init__(self, size: int, future: asyncio.Future[np.ndarray]) -> None:
        self.rewards = np.empty(size, dtype=np.float32)
        self.remaining = size
        self.future = future

    def set(self, index: int, reward: float) -> None:
        self.rewards[index] = reward
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(self.rewards)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(frozen=True, slots=True)
class _Entry:
    sequence: EncodedPair
    request: _Request
    index: int


class MicroBatcher:
    def __init__(
        self, engine: Engine, max_batch_size: int, max_batch_tokens: int, metrics: Metrics | None = None
    ) -> None:
        self._engine = engine
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._metrics = metrics
        self._queue: deque[_Entry] = deque()
        self._wakeup = asyncio.Event()
        # One engine thread: ONNX Runtime already spreads one call over all cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run_forever(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def score(self, sequences: Sequence[EncodedPair]) -> np.ndarray:
        """Rewards of `sequences`, in order, once every batch holding one of them has run."""
        if not sequences:
            return np.empty(0, dtype=np.float32)
        request = _Request(len(sequences), asyncio.get_running_loop().create_future())
        self._queue.extend(_Entry(seq, request, i) for i, seq in enumerate(sequences))
        self._set_queue_depth()
        self._wakeup.set()
        return await request.future

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        longest = 0
        while self._queue and len(batch) < self._max_batch_size:
            entry = self._queue[0]
            if entry.request.future.done():  # caller gone or already failed
                self._queue.popleft()
                continue
            padded = max(longest, len(entry.sequence)) * (len(batch) + 1)
            if batch and padded > self._max_batch_tokens:
                break
            longest = max(longest, len(entry.sequence))
            batch.append(self._queue.popleft())
        self._set_queue_depth()
        return batch

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while batch := self._take_batch():
                started = time.perf_counter()
                try:
                    rewards = await loop.run_in_executor(self._executor, self._engine, [e.sequence for e in batch])
                    if len(rewards) != len(batch):
                        raise RuntimeError(f"engine returned {len(rewards)} rewards for {len(batch)} sequences")
                except Exception as error:  # only this batch's requests fail; the worker lives on
                    for entry in batch:
                        entry.request.fail(error)
                    continue
                for entry, reward in zip(batch, rewards, strict=True):
                    entry.request.set(entry.index, float(reward))
                self._observe(len(batch), time.perf_counter() - started)

    def _observe(self, size: int, seconds: float) -> None:
        if self._metrics:
            self._metrics.batch_size.observe(size)
            self._metrics.sequences.inc(size)
            self._metrics.inference_seconds.observe(seconds)

    def _set_queue_depth(self) -> None:
        if self._metrics:
            self._metrics.queue_depth.set(len(self._queue))
