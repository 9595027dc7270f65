"""The scoring service the routes talk to: admission, tokenization, the micro-batcher and the
engine, and the life cycle around them (warm-up, readiness, draining on shutdown)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rewardserve.bundle import BundleRuntime, EncodedPair, bundle_digest
from rewardserve.service.batcher import MicroBatcher, Scored, ShuttingDownError
from rewardserve.service.cache import RewardCache
from rewardserve.service.engine import PROBE_PROMPTS, PROBE_RESPONSES, Engine
from rewardserve.service.errors import QueueFullError, SequenceTooLongError
from rewardserve.service.inputs import Pairs, RequestInputs
from rewardserve.service.metrics import Metrics
from rewardserve.service.monitoring import RewardMonitor
from rewardserve.service.settings import Settings
from rewardserve.service.threads import in_lower_priority_thread, lower_this_thread

logger = logging.getLogger("rewardserve")

# On a CPU an engine call costs about its padded tokens whatever the batch size (measured: HH
# sequences sorted by length run at the same speed in batches of 256 to 8192 tokens), so small
# batches lose nothing and let the batcher group closer lengths. A GPU needs large batches to
# fill its cores.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}


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
        self.inputs = RequestInputs(settings, self.manifest.input_format.chat_template)
        self.monitor = RewardMonitor(metrics.registry, self.manifest.reward_mean, self.manifest.reward_std)
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
        metrics.queue_limit.set(self.max_in_flight)
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
    def temperature(self) -> float:
        """The calibration temperature T of the bundle's choice probabilities."""
        return self.manifest.calibration_temperature

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
        await self.score(Pairs.of_texts(PROBE_PROMPTS * 2, PROBE_RESPONSES * 2), monitored=False)
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

    async def score(self, pairs: Pairs, *, truncate: bool = True, monitored: bool = True) -> Scored:
        """Rewards in request order, with where the time went; `monitored` rewards count in the
        reward monitor's metrics.

        Raises QueueFullError (the queue cannot take this many sequences now), ShuttingDownError
        (draining), UnrenderableChatError and SequenceTooLongError (when `truncate` is false),
        the last two naming the sequence's field.
        """
        count = len(pairs)
        self._admit(count)
        try:
            # Render and tokenize in one batch call on the tokenizer thread, before queueing: the
            # engine keeps running meanwhile, and a bad input fails its own request.
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            sequences = await loop.run_in_executor(self._tokenizer, self._encode, pairs)
            tokenized = time.perf_counter() - started
            self.metrics.tokenization_seconds.observe(tokenized)
            if not truncate:
                self._reject_truncated(sequences, pairs)
            scored = await self.batcher.score(sequences)
            if monitored:
                self.monitor.observe(scored.rewards, self._response_tokens(sequences))
            tokens = sum(len(s) for s in sequences)
            return dataclasses.replace(scored, tokenization_seconds=tokenized, tokens=tokens)
        finally:
            self._release(count)

    def _encode(self, pairs: Pairs) -> list[EncodedPair]:
        return self.runtime.encoder.encode(*pairs.texts())

    def _response_tokens(self, sequences: Sequence[EncodedPair]) -> np.ndarray:
        """Each response's length in tokens, as sent (what truncation cut counts)."""
        suffix = len(self.manifest.input_format.suffix_ids)
        return np.array([len(s) - s.response_start - suffix + s.response_cut for s in sequences], dtype=np.float64)

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

    def _reject_truncated(self, sequences: Sequence[EncodedPair], pairs: Pairs) -> None:
        limit = self.runtime.encoder.format.max_length
        for index, sequence in enumerate(sequences):
            if sequence.prompt_cut or sequence.response_cut:
                tokens = len(sequence) + sequence.prompt_cut + sequence.response_cut
                raise SequenceTooLongError(
                    f'{pairs.where(index)}: {tokens} tokens, over the model\'s {limit}; send "truncate": true '
                    "to cut the prompt from the left"
                )
