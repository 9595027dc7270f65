"""What the server hands out, for the dashboards that watch a PPO or GRPO run.

A policy that learns to exploit its reward model shows here before it shows in evaluations:
the reward distribution drifts up, and rewards start to follow response length. So the server
exports histograms of the rewards it answered and of the responses' lengths, and the
correlation of the two over the most recent sequences.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LENGTH_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Reward buckets in standard deviations around the bundle's reference mean, so that any
# model's scale gets a useful histogram without configuration.
REWARD_BUCKET_STDS = (-3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3)
CORRELATION_WINDOW = 4096


class BulkHistogram(Collector):
    """A Prometheus histogram that observes a whole numpy array at once: a 1024-item request
    costs one searchsorted instead of 1024 `Histogram.observe` calls on the event loop."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last one is +Inf
        self.sum = 0.0
        registry.register(self)

    def observe(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        # `le` buckets: a value equal to a bound counts in that bound's bucket.
        np.add.at(self.counts, np.searchsorted(self.bounds, values, side="left"), 1)
        self.sum += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = np.cumsum(self.counts)
        labels = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        # As prometheus_client's own Histogram does, _sum is left out when values can be negative:
        # a sum that falls would read as a counter reset to rate(). _count is always there.
        signed = self.bounds[0] < 0
        family.add_metric([], list(zip(labels, cumulative.tolist(), strict=True)), None if signed else self.sum)
        if signed:
            family.add_sample(f"{self.name}_count", {}, float(cumulative[-1]))
        yield family


class RewardMonitor:
    """Histograms of answered rewards and response lengths (tokens, before truncation); over the
    last `window` sequences, the mean reward and the Pearson correlation of reward and length."""

    def __init__(
        self,
        registry: CollectorRegistry,
        reward_mean: float | None,
        reward_std: float | None,
        window: int = CORRELATION_WINDOW,
    ) -> None:
        mean, std = reward_mean or 0.0, reward_std or 1.0
        self.rewards = BulkHistogram(
            "rewardserve_reward",
            "Rewards answered (warm-up excluded); buckets are the bundle's reference mean +- 0.5 std steps.",
            [mean + k * std for k in REWARD_BUCKET_STDS],
            registry,
        )
        self.response_tokens = BulkHistogram(
            "rewardserve_response_tokens",
            "Tokens of each scored response, before truncation.",
            LENGTH_BUCKETS,
            registry,
        )
        self._recent = np.zeros((2, window), dtype=np.float64)  # rewards, lengths: a ring
        self._next = 0
        self._filled = 0
        correlation = Gauge(
            "rewardserve_reward_length_correlation",
            f"Pearson correlation of reward and response length over the last {window} sequences "
            "(NaN until there are two of different lengths and rewards). Rising means rewards follow length.",
            registry=registry,
        )
        correlation.set_function(self.correlation)
        recent_mean = Gauge(
            "rewardserve_reward_recent_mean",
            f"Mean reward over the last {window} sequences (NaN before the first): drift shows here.",
            registry=registry,
        )
        for stat, value in (("mean", reward_mean), ("std", reward_std)):
            reference = Gauge(
                f"rewardserve_reward_reference_{stat}",
                f"Reward {stat} on the bundle's reference (held-out) set, from its manifest; NaN when absent. "
                "Drift alerts compare rewardserve_reward_recent_mean with it.",
                registry=registry,
            )
            reference.set(math.nan if value is None else value)
        recent_mean.set_function(lambda: float(self._recent[0, : self._filled].mean()) if self._filled else math.nan)

    def observe(self, rewards: np.ndarray, lengths: np.ndarray) -> None:
        self.rewards.observe(rewards)
        self.response_tokens.observe(lengths)
        window = self._recent.shape[1]
        rewards, lengths = rewards[-window:], lengths[-window:]
        slots = (self._next + np.arange(len(rewards))) % window
        self._recent[0, slots] = rewards
        self._recent[1, slots] = lengths
        self._next = (self._next + len(rewards)) % window
        self._filled = min(self._filled + len(rewards), window)

    def correlation(self) -> float:
        rewards, lengths = self._recent[:, : self._filled]
        if self._filled < 2 or rewards.std() == 0 or lengths.std() == 0:
            return math.nan
        return float(np.corrcoef(rewards, lengths)[0, 1])
