"""The scoring service the routes talk to: bundle runtime + tokenization + micro-batcher."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from rewardserve.bundle import BundleRuntime, EncodedPair, Manifest, bundle_digest
from rewardserve.service.batcher import MicroBatcher, Scored
from rewardserve.service.cache import RewardCache
from rewardserve.service.metrics import Metrics
from rewardserve.service.settings import Settings

# On a CPU an engine call costs about its padded tokens whatever the batch size (measured: HH
# sequences sorted by length run at the same speed in batches of 256 to 8192 tokens), so small
# batches lose nothing and let the batcher group closer lengths. A GPU needs large batches to
# fill its cores.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}


class ScoringService:
    def __init__(self, settings: Settings, metrics: Metrics, manifest: Manifest | None = None) -> None:
        # Without an already verified manifest, loading verifies every checksum in the bundle
        # before the server accepts anything.
        self.runtime = BundleRuntime(settings.bundle, manifest, threads=settings.threads)
        self.manifest = self.runtime.manifest
        self.metrics = metrics
        cache = RewardCache(bundle_digest(self.manifest), settings.cache_size) if settings.cache_size else None
        batch_tokens = settings.max_batch_tokens or DEFAULT_BATCH_TOKENS[self.runtime.device]
        self.batcher = MicroBatcher(self._run_engine, settings.max_batch_size, batch_tokens, metrics, cache)
        self.ready = False

    @property
    def model_name(self) -> str:
        return self.manifest.name

    async def start(self) -> None:
        """Start batching and warm up; `ready` turns true when the first batches have run."""
        self.batcher.start()
        await self.score(["warm-up"] * 4, ["a short response", "a somewhat longer response " * 8] * 2)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()

    async def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Scored:
        """Rewards in request order, with where the time went."""
        # Tokenize in one batch call on a thread (tokenizers releases the GIL) and before
        # queueing: the engine keeps running meanwhile, and a bad input fails its own request.
        started = time.perf_counter()
        sequences = await asyncio.to_thread(self.runtime.encoder.encode, prompts, responses)
        tokenized = time.perf_counter() - started
        self.metrics.tokenization_seconds.observe(tokenized)
        scored = await self.batcher.score(sequences)
        return dataclasses.replace(scored, tokenization_seconds=tokenized)

    def preference_probability(self, rewards_a: np.ndarray, rewards_b: np.ndarray) -> np.ndarray:
        """Bradley-Terry p(a better than b) = sigmoid((r_a - r_b) / T), computed without overflow."""
        gap = (rewards_a.astype(np.float64) - rewards_b) / self.manifest.calibration_temperature
        return np.exp(-np.logaddexp(0.0, -gap))

    def _run_engine(self, sequences: Sequence[EncodedPair]) -> np.ndarray:
        return self.runtime.run(self.runtime.encoder.pad(sequences))
