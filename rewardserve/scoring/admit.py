"""Stage 4, admit: whether the server takes a request now. 503 (warming up, broken, draining)
and 429 (the queue is full) are decided here and nowhere else.

An admitted request holds a permit for its sequences until it ends, whatever way it ends
(rewards, an error, a deadline, a client gone), as text-embeddings-inference's permits are
released on drop. Nothing waits for room: a request the queue cannot take is refused at once,
with a Retry-After from the engine's recent pace. Admission comes before rendering and
tokenizing, so that overload is refused before it costs the tokenizer anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator

from rewardserve.scoring.errors import NotReadyError, QueueFullError, ShuttingDownError
from rewardserve.scoring.metrics import Metrics

logger = logging.getLogger("rewardserve")


class Admission:
    def __init__(
        self,
        max_in_flight: int,
        metrics: Metrics,
        throughput: Callable[[], float | None],
        healthy: Callable[[], bool],
    ) -> None:
        """`throughput`: the engine's recent sequences per second (None before its first batch);
        `healthy`: false once the engine is broken beyond repair."""
        self.max_in_flight = max_in_flight
        self.metrics = metrics
        self.throughput = throughput
        self.healthy = healthy
        metrics.queue_limit.set(max_in_flight)
        self.in_flight_sequences = 0
        self.in_flight_requests = 0
        self._idle = asyncio.Event()  # no admitted request unanswered
        self._idle.set()
        self.warmed_up = False
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.warmed_up and self.healthy() and not self.draining

    def check_ready(self) -> None:
        """ShuttingDownError or NotReadyError (503) unless the server takes work now."""
        self._check_open()
        if not self.ready:
            raise NotReadyError("the model is warming up, or the engine is broken")

    def check_room(self, count: int) -> None:
        """QueueFullError (429) unless `count` more sequences fit in the queue now."""
        if self.in_flight_sequences + count > self.max_in_flight:
            excess = self.in_flight_sequences + count - self.max_in_flight
            retry_after = min(max(math.ceil(excess / (self.throughput() or 1.0)), 1), 60)
            raise QueueFullError(
                f"overloaded: {self.in_flight_sequences} sequences in flight, {count} more would pass "
                f"the limit of {self.max_in_flight}",
                retry_after=retry_after,
            )

    @contextlib.contextmanager
    def permit(self, count: int) -> Iterator[None]:
        """Hold room for `count` sequences while the block runs; refused unless open with room."""
        self._check_open()
        self.check_room(count)
        self._take(count, +1)
        try:
            yield
        finally:
            self._take(-count, -1)

    async def drain(self, timeout: float, on_timeout: Callable[[], None]) -> None:
        """Refuse new work and wait until every admitted request is answered; after `timeout`
        seconds, call `on_timeout` (which fails what is still queued) and wait for the rest."""
        self.draining = True
        logger.info("draining: %d accepted requests to answer", self.in_flight_requests)
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            logger.warning("drain timeout (%.1f s): failing what is still queued", timeout)
            on_timeout()
            # What is left is the running batch and requests still tokenizing, which the closed
            # batcher now refuses: both end within about one batch.
            await self._idle.wait()
        logger.info("drained in %.2f s", time.perf_counter() - started)

    def _check_open(self) -> None:
        if self.draining:
            raise ShuttingDownError("the server is shutting down; retry on another replica")

    def _take(self, sequences: int, requests: int) -> None:
        self.in_flight_sequences += sequences
        self.in_flight_requests += requests
        if self.in_flight_requests == 0:
            self._idle.set()
        else:
            self._idle.clear()
        self.metrics.in_flight_sequences.set(self.in_flight_sequences)
