"""A request's rewards gathered back from the batches its sequences ran in (batcher.py splits
a request into sequences and batches them with every other client's), and where its time went."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from rewardserve.bundle.outputs import Extra, Scores


@dataclass(frozen=True, slots=True)
class Scored:
    """A request's rewards (and the model's other outputs), in its order, and where its time went."""

    scores: Scores
    queue_seconds: float = 0.0  # in the batcher but not in one of its own batches
    inference_seconds: float = 0.0  # engine time of the batches that held its sequences
    cached: int = 0  # sequences answered without running them: cached, or joined to an identical one


class Gathered:
    """One request's rewards, filled in as the batches that hold its sequences finish; its
    future gets them, in its order, with the last one."""

    __slots__ = (
        "rewards",
        "extras",
        "remaining",
        "future",
        "enqueued_at",
        "inference_seconds",
        "last_batch",
        "cached",
    )

    def __init__(self, size: int, future: asyncio.Future[Scored]) -> None:
        self.rewards = np.empty(size, dtype=np.float32)
        self.extras: list[Extra | None] | None = None  # made when the first extra output arrives
        self.remaining = size
        self.future = future
        self.enqueued_at = time.perf_counter()
        self.inference_seconds = 0.0
        self.last_batch = -1
        self.cached = 0

    def ran_in(self, batch: int, seconds: float) -> None:
        if batch != self.last_batch:  # several of its sequences in one batch count that batch once
            self.last_batch = batch
            self.inference_seconds += seconds

    def set(self, index: int, reward: float, extra: Extra | None = None) -> None:
        self.rewards[index] = reward
        if extra is not None:
            if self.extras is None:
                self.extras = [None] * len(self.rewards)
            self.extras[index] = extra
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            waited = time.perf_counter() - self.enqueued_at - self.inference_seconds
            scores = Scores.of_rows(self.rewards, self.extras)
            self.future.set_result(Scored(scores, max(waited, 0.0), self.inference_seconds, self.cached))

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)
