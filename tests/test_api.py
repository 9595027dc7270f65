"""The HTTP API, served in-process (lifespan included) on the tiny bundle."""

import math
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rewardserve.bundle import load_bundle
from rewardserve.service import Settings, create_app


def wait_ready(client: TestClient, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(tiny_bundle):
    with TestClient(create_app(Settings(bundle=tiny_bundle, max_items_per_request=8))) as client:
        wait_ready(client)
        yield client


ITEMS = [
    {"prompt": "\n\nHuman: What is the capital of France?", "response": "Paris."},
    {"prompt": "\n\nHuman: What is the capital of France?", "response": "I like turtles " * 20},
    {"prompt": "\n\nHuman: Hi", "response": "Hello! How can I help you today?"},
]


def test_score_returns_one_reward_per_item_in_request_order(client):
    body = client.post("/score", json={"items": ITEMS}).json()
    assert body["model"] == "tiny-test-model"
    assert len(body["rewards"]) == 3
    reversed_body = client.post("/score", json={"items": ITEMS[::-1]}).json()
    assert reversed_body["rewards"] == pytest.approx(body["rewards"][::-1], abs=1e-5)
    assert len(set(body["rewards"])) == 3


def test_compare_gives_rewards_and_calibrated_bradley_terry_probability(client, tiny_bundle):
    temperature = load_bundle(tiny_bundle).calibration_temperature
    scored = client.post("/score", json={"items": ITEMS[:2]}).json()["rewards"]
    item = {"prompt": ITEMS[0]["prompt"], "a": ITEMS[0]["response"], "b": ITEMS[1]["response"]}
    (result,) = client.post("/compare", json={"items": [item]}).json()["results"]
    assert [result["reward_a"], result["reward_b"]] == pytest.approx(scored, abs=1e-5)
    expected = 1 / (1 + math.exp(-(result["reward_a"] - result["reward_b"]) / temperature))
    assert result["p_a_better"] == pytest.approx(expected, abs=1e-9)
    swapped = {**item, "a": item["b"], "b": item["a"]}
    (other,) = client.post("/compare", json={"items": [swapped]}).json()["results"]
    assert result["p_a_better"] + other["p_a_better"] == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"items": [{"prompt": "p"}]}, "items[0].response: required (or messages, the chat form)"),
        ({"items": [{"prompt": "p", "response": 3}]}, "items[0].response: Input should be a valid string"),
        ({"items": [{"prompt": "p", "response": "r", "respones": "typo"}]}, "items[0].respones: Extra inputs"),
        (
            {"items": [{"prompt": "p", "response": "r", "messages": [{"role": "assistant", "content": "r"}]}]},
            "items[0].prompt: not with messages",
        ),
        (
            {"items": [{"messages": [{"role": "user", "content": "hi"}]}]},
            "items[0].messages: the last message is the response: an assistant's, not a user's",
        ),
        ({"items": [{"messages": []}]}, "items[0].messages: List should have at least 1 item"),
        ({"items": []}, "items: List should have at least 1 item"),
        ({}, "items: Field required"),
    ],
)
def test_invalid_score_bodies_are_422_naming_the_field(client, body, message):
    response = client.post("/score", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(message)


def test_invalid_json_is_422(client):
    response = client.post("/compare", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_too_many_items_is_413_with_the_limit(client):
    response = client.post("/score", json={"items": ITEMS * 3})
    assert response.status_code == 413
    assert response.json() == {
        "error": "items: 9 items, at most 8 per request (max_items_per_request)",
        "error_type": "too_many_items",
    }


def test_health_ready_docs_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    assert client.get("/docs").status_code == 200
    assert "/score" in client.get("/openapi.json").json()["paths"]
    client.post("/score", json={"items": ITEMS})
    metrics = client.get("/metrics").text
    assert 'rewardserve_requests_total{endpoint="/score",status="200"}' in metrics
    assert "rewardserve_batch_size_bucket" in metrics
    assert "rewardserve_queue_depth" in metrics


def test_every_server_setting_is_in_the_settings_table():
    operate = (Path(__file__).parents[1] / "docs" / "operate.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `{name.upper()}` |" not in operate]
    assert not missing
