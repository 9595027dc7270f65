"""Reward monitoring for RL runs: histograms of the rewards the server answered and of response
lengths, and the rolling reward-length correlation, on /metrics."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_api import wait_ready

from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.outputs import Scores
from rewardserve.scoring.monitoring import BulkHistogram, RewardMonitor
from rewardserve.service import Settings, create_app


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_bulk_histogram_exposes_what_prometheus_own_histogram_would():
    values = np.array([-3.0, -1.0, -0.5, 0.0, 0.0, 0.4, 1.0, 2.5, 7.0, 1e9])
    buckets = (-1.0, 0.0, 0.5, 1.0, 2.0)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    BulkHistogram("h", "doc", buckets, ours).observe(values)
    reference = Histogram("h", "doc", buckets=buckets, registry=theirs)
    for value in values:
        reference.observe(value)
    assert samples(ours) == samples(theirs)


def test_the_correlation_covers_the_last_window_of_sequences():
    monitor = RewardMonitor(CollectorRegistry(), reward_mean=None, reward_std=None, window=100)
    assert np.isnan(monitor.correlation())
    rng = np.random.default_rng(0)
    old = rng.normal(size=150)
    monitor.observe(Scores(old), -old)  # anti-correlated, pushed out of the window below
    new_rewards, new_lengths = rng.normal(size=(2, 100))
    for start in range(0, 100, 30):  # several requests of different sizes
        monitor.observe(Scores(new_rewards[start : start + 30]), new_lengths[start : start + 30])
    assert monitor.correlation() == pytest.approx(np.corrcoef(new_rewards, new_lengths)[0, 1])


def test_reward_buckets_follow_the_bundles_reference_scale():
    registry = CollectorRegistry()
    RewardMonitor(registry, reward_mean=10.0, reward_std=2.0)
    bounds = [labels[0][1] for (name, labels) in samples(registry) if name == "rewardserve_reward_bucket"]
    assert bounds[:3] == ["4.0", "5.0", "6.0"] and "10.0" in bounds and bounds[-2:] == ["16.0", "+Inf"]


def test_metrics_show_the_answered_rewards_and_lengths_and_their_correlation(tiny_bundle):
    prompt = "\n\nHuman: Tell me about cats."
    responses = [" ".join(["cats"] * n) for n in (1, 5, 20, 60, 3, 40)]
    with TestClient(create_app(Settings(bundle=tiny_bundle))) as client:
        wait_ready(client)
        rewards = client.post("/score", json={"items": [{"prompt": prompt, "response": r} for r in responses]})
        rewards = rewards.json()["rewards"]
        body = {"items": [{"prompt": prompt, "a": responses[0], "b": responses[1]}]}
        compared = client.post("/compare", json=body).json()["results"][0]
        metrics = {
            (s.name, tuple(s.labels.items())): s.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for s in family.samples
        }
    answered = np.array([*rewards, compared["reward_a"], compared["reward_b"]])
    encoder = BundleRuntime(tiny_bundle).encoder
    lengths = np.array([len(e.ids) for e in encoder.tokenizer.encode_batch(responses, add_special_tokens=False)])
    lengths = np.concatenate([lengths, lengths[:2]])
    # the warm-up is not counted: exactly what the two requests answered
    assert metrics[("rewardserve_reward_count", ())] == len(answered)
    assert metrics[("rewardserve_reward_recent_mean", ())] == pytest.approx(answered.mean(), abs=1e-5)
    assert metrics[("rewardserve_response_tokens_sum", ())] == lengths.sum()
    assert metrics[("rewardserve_response_tokens_bucket", (("le", "8.0"),))] == np.sum(lengths <= 8)
    expected = np.corrcoef(answered, lengths)[0, 1]
    assert metrics[("rewardserve_reward_length_correlation", ())] == pytest.approx(expected, abs=1e-5)
