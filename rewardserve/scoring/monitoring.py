"""What the server hands out, for the dashboards that watch a PPO or GRPO run.

A policy that learns to exploit its reward model shows here before it shows in evaluations:
the reward distribution drifts up, and rewards start to follow response length. So the server
exports histograms of the rewards it answered and of the responses' lengths, and the
correlation of the two over the most recent sequences. A multi-objective model adds one
histogram per objective (labelled `objective`): a policy gaming one objective at the expense of
another shows there. A process reward model adds the number of steps per response and the step
rewards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from rewardserve.bundle.outputs import ModelOutputs, Scores

LENGTH_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Reward buckets in standard deviations around the bundle's reference mean, so that any
# model's scale gets a useful histogram without configuration.
REWARD_BUCKET_STDS = (-3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3)
CORRELATION_WINDOW = 4096
# Objectives come on every scale (ArmoRM's are mostly within [-1, 1], others' logits wider) and
# export measures no statistics of theirs: buckets that double away from zero fit most.
OBJECTIVE_BUCKETS = (-8, -4, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 4, 8)
STEP_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
STEP_REWARD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # probabilities


class BulkHistogram(Collector):
    """A Prometheus histogram that observes a whole numpy array at once: a 1024-item request
    costs one searchsorted instead of 1024 `Histogram.observe` calls on the event loop."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
        label: str | None = None,
        values: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        # One histogram per value of `label` (or one without labels); the last bucket is +Inf.
        self.label = label
        self.counts = {value: np.zeros(len(self.bounds) + 1, dtype=np.int64) for value in (values if label else [""])}
        self.sums = dict.fromkeys(self.counts, 0.0)
        registry.register(self)

    def observe(self, values: np.ndarray, label: str = "") -> None:
        values = np.asarray(values, dtype=np.float64)
        # `le` buckets: a value equal to a bound counts in that bound's bucket.
        np.add.at(self.counts[label], np.searchsorted(self.bounds, values, side="left"), 1)
        self.sums[label] += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        bounds = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label] if self.label else None)
        # As prometheus_client's own Histogram does, _sum is left out when values can be negative:
        # a sum that falls would read as a counter reset to rate(). _count is always there.
        signed = self.bounds[0] < 0
        for value, counts in self.counts.items():
            cumulative = np.cumsum(counts)
            labels = [value] if self.label else []
            buckets = list(zip(bounds, cumulative.tolist(), strict=True))
            family.add_metric(labels, buckets, None if signed else self.sums[value])
            if signed:
                sample_labels = {self.label: value} if self.label else {}
                family.add_sample(f"{self.name}_count", sample_labels, float(cumulative[-1]))
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
        outputs: ModelOutputs | None = None,
    ) -> None:
        mean, std = reward_mean or 0.0, reward_std or 1.0
        self._model_outputs(registry, outputs or ModelOutputs())
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
        self._drift_gauges(registry, window, reward_mean, reward_std)

    def _model_outputs(self, registry: CollectorRegistry, outputs: ModelOutputs) -> None:
        """Histograms of what a model answers beside its reward: objectives, steps."""
        self.objectives = self.steps = self.step_rewards = None
        if outputs.objectives is not None:
            self.names = outputs.objectives.names
            self.objectives = BulkHistogram(
                "rewardserve_objective",
                "Each objective's values answered (multi-objective models), by objective.",
                OBJECTIVE_BUCKETS,
                registry,
                label="objective",
                values=self.names,
            )
        if outputs.steps is not None:
            self.steps = BulkHistogram(
                "rewardserve_response_steps",
                "Steps per scored response (process reward models).",
                STEP_COUNT_BUCKETS,
                registry,
            )
            self.step_rewards = BulkHistogram(
                "rewardserve_step_reward",
                "Step rewards answered (process reward models).",
                STEP_REWARD_BUCKETS,
                registry,
            )

    def _drift_gauges(
        self, registry: CollectorRegistry, window: int, reward_mean: float | None, reward_std: float | None
    ) -> None:
        """The recent mean and the reward-length correlation, read at each scrape, and the
        reference mean and std the drift alert compares them with."""
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
        recent_mean.set_function(lambda: float(self._recent[0, : self._filled].mean()) if self._filled else math.nan)
        for stat, value in (("mean", reward_mean), ("std", reward_std)):
            reference = Gauge(
                f"rewardserve_reward_reference_{stat}",
                f"Reward {stat} on the bundle's reference (held-out) set, from its manifest; NaN when absent. "
                "Drift alerts compare rewardserve_reward_recent_mean with it.",
                registry=registry,
            )
            reference.set(math.nan if value is None else value)

    def observe(self, scores: Scores, lengths: np.ndarray) -> None:
        rewards = scores.rewards
        self.rewards.observe(rewards)
        if self.objectives is not None and scores.objectives is not None:
            for column, name in enumerate(self.names):
                self.objectives.observe(scores.objectives[:, column], name)
        if self.steps is not None and self.step_rewards is not None and scores.steps is not None:
            self.steps.observe(np.array([len(s) for s in scores.steps]))
            self.step_rewards.observe(np.concatenate(scores.steps))
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
