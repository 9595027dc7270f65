"""The scoring service the routes talk to: admission, tokenization, the micro-batcher and the
engine, and the life cycle around them (warm-up, readiness, draining on shutdown)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rewardserve.bundle import BundleRuntime, EncodedPair, bundle_digest
from rewardserve.service.batcher import MicroBatcher, Scored, ShuttingDownError
from rewardserve.service.cache import RewardCache
from rewardserve.service.engine import PROBE_PROMPTS, PROBE_RESPONSES, Engine
from rewardserve.service.errors import QueueFullError, SequenceTooLongError
from rewardserve.service.metrics import Metrics
from rewardserve.service.settings import Settings
from rewardserve.service.threads import in_lower_priority_thread, lower_this_thread

logger = logging.getLogger("rewardserve")

# On a CPU an engine call costs about its padded tokens whatever the batch size (measured: HH
# sequences sorted by length run at the same speed in batches of 256 to 8192 tokens), so small
# batches lose nothing and let the batcher group closer lengths. A GPU needs large batches to
# fill its cores.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}

Where = Callable[[int], str]  # a sequence's index -> its field path, for error messages


def item_path(index: int) -> str:
    return f"items[{index}]"


class ScoringService:
    def __init__(self, settings: Settings, metrics: Metrics, runtime: BundleRuntime | None = None) -> None:
        # Without a runtime opened already, loading verifies every checksum in the bundle
        # before the server accepts anything.
        nice = settings.worker_nice
        self.runtime = runtime or in_lower_priority_thread(
            nice, lambda: BundleRuntime(settings.bundle, threads=settings.threads)
        )
        self.manifest = self.runtime.manifest
        self.metrics = metrics
        self.engine = Engine(self.runtime, metrics)
        cache = RewardCache(bundle_digest(self.manifest), settings.cache_size) if settings.cache_size else None
        batch_tokens = settings.max_batch_tokens or DEFAULT_BATCH_TOKENS[self.runtime.device]
        lower = functools.partial(lower_this_thread, nice)
        self.batcher = MicroBatcher(self.engine, settings.max_batch_size, batch_tokens, metrics, cache, lower)
        # One tokenizer thread: tokenizers already spreads a batch call over the cores, and more
        # threads would only contend for them and for the GIL. Workers run below the event
        # loop's priority (service/threads.py), so that the loop answers 429s at once.
        self._tokenizer = ThreadPoolExecutor(1, thread_name_prefix="tokenizer", initializer=lower)
        self.max_in_flight = settings.max_queued_sequences
        self.in_flight_sequences = 0
        self.in_flight_requests = 0
        self._idle = asyncio.Event()  # no accepted request unanswered
        self._idle.set()
        self.warmed_up = False
        self.draining = False

    @property
    def model_name(self) -> str:
        return self.manifest.name

    @property
    def healthy(self) -> bool:
        """False once the engine is broken beyond reopening its session: restart the process."""
        return not self.engine.broken

    @property
    def ready(self) -> bool:
        return self.warmed_up and self.healthy and not self.draining

    async def start(self) -> None:
        """Start batching and warm up; `ready` turns true when the first batches have run."""
        self.batcher.start()
        await self.score(PROBE_PROMPTS * 2, PROBE_RESPONSES * 2)
        self.warmed_up = True

    async def drain(self, timeout: float) -> None:
        """Refuse new work and answer every accepted request: with rewards if they are ready
        within `timeout` seconds, else with ShuttingDownError (503) for what is still queued."""
        self.draining = True
        logger.info("draining: %d accepted requests to answer", self.in_flight_requests)
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            logger.warning("drain timeout (%.1f s): failing %d queued sequences", timeout, self.batcher.queued)
            self.batcher.close()
            # What is left is the running batch and requests still tokenizing, which the closed
            # batcher now refuses: both end within about one batch.
            await self._idle.wait()
        logger.info("drained in %.2f s", time.perf_counter() - started)

    async def stop(self) -> None:
        self.draining = True
        await self.batcher.stop()
        self._tokenizer.shutdown(wait=False, cancel_futures=True)

    async def score(
        self, prompts: Sequence[str], responses: Sequence[str], *, truncate: bool = True, where: Where = item_path
    ) -> Scored:
        """Rewards in request order, with where the time went.

        Raises QueueFullError (the queue cannot take this many sequences now), ShuttingDownError
        (draining) and SequenceTooLongError (a sequence over the model's length when `truncate`
        is false, named with `where`).
        """
        count = len(prompts)
        self._admit(count)
        try:
            # Tokenize in one batch call on the tokenizer thread and before queueing: the engine
            # keeps running meanwhile, and a bad input fails its own request.
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            sequences = await loop.run_in_executor(self._tokenizer, self.runtime.encoder.encode, prompts, responses)
            tokenized = time.perf_counter() - started
            self.metrics.tokenization_seconds.observe(tokenized)
            if not truncate:
                self._reject_truncated(sequences, where)
            scored = await self.batcher.score(sequences)
            tokens = sum(len(s) for s in sequences)
            return dataclasses.replace(scored, tokenization_seconds=tokenized, tokens=tokens)
        finally:
            self._release(count)

    def preference_probability(self, rewards_a: np.ndarray, rewards_b: np.ndarray) -> np.ndarray:
        """Bradley-Terry p(a better than b) = sigmoid((r_a - r_b) / T), computed without overflow."""
        gap = (rewards_a.astype(np.float64) - rewards_b) / self.manifest.calibration_temperature
        return np.exp(-np.logaddexp(0.0, -gap))

    @property
    def full(self) -> bool:
        """No room for even one more sequence."""
        return self.in_flight_sequences >= self.max_in_flight

    def overloaded(self, count: int) -> QueueFullError:
        """The 429 for a request of `count` sequences that the queue cannot take now."""
        return QueueFullError(
            f"overloaded: {self.in_flight_sequences} sequences in flight, {count} more would pass "
            f"the limit of {self.max_in_flight}",
            retry_after=self._seconds_until_room(count),
        )

    def _admit(self, count: int) -> None:
        """Take `count` sequences in, or refuse at once: nothing waits for room in the queue."""
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry on another replica")
        if self.in_flight_sequences + count > self.max_in_flight:
            raise self.overloaded(count)
        self.in_flight_sequences += count
        self.in_flight_requests += 1
        self._idle.clear()
        self.metrics.in_flight_sequences.set(self.in_flight_sequences)

    def _release(self, count: int) -> None:
        self.in_flight_sequences -= count
        self.in_flight_requests -= 1
        if self.in_flight_requests == 0:
            self._idle.set()
        self.metrics.in_flight_sequences.set(self.in_flight_sequences)

    def _seconds_until_room(self, count: int) -> int:
        """Retry-After: how long the engine takes, at its recent pace, to make room for `count`."""
        excess = self.in_flight_sequences + count - self.max_in_flight
        rate = self.batcher.throughput or 1.0
        return min(max(math.ceil(excess / rate), 1), 60)

    def _reject_truncated(self, sequences: Sequence[EncodedPair], where: Where) -> None:
        limit = self.runtime.encoder.format.max_length
        for index, sequence in enumerate(sequences):
            if sequence.prompt_cut or sequence.response_cut:
                tokens = len(sequence) + sequence.prompt_cut + sequence.response_cut
                raise SequenceTooLongError(
                    f'{where(index)}: {tokens} tokens, over the model\'s {limit}; send "truncate": true '
                    "to cut the prompt from the left"
                )
