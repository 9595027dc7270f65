"""K-wise `/compare`: one prompt, K responses -> rewards, ranking, Plackett-Luce first-choice
probabilities and the Bradley-Terry matrix, for best-of-n selection."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_api import wait_ready

from rewardserve.bundle import load_bundle
from rewardserve.service import Settings, create_app

PROMPT = "\n\nHuman: What is the capital of France?\n\nAssistant:"
RESPONSES = [" Paris.", " I like turtles.", " The capital of France is Paris.", " Rome?", " Paris."]


@pytest.fixture(scope="module")
def client(tiny_bundle):
    with TestClient(create_app(Settings(bundle=tiny_bundle, cache_size=0, max_items_per_request=8))) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def temperature(tiny_bundle) -> float:
    return load_bundle(tiny_bundle).calibration_temperature


@pytest.fixture(scope="module")
def ranked(client) -> dict:
    answer = client.post("/compare", json={"prompt": PROMPT, "responses": RESPONSES})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_rewards_are_each_responses_score_in_request_order(client, ranked):
    items = [{"prompt": PROMPT, "response": r} for r in RESPONSES]
    assert ranked["rewards"] == pytest.approx(client.post("/score", json={"items": items}).json()["rewards"], abs=1e-6)
    assert ranked["model"] == "tiny-test-model"


def test_ranking_is_best_first_and_ties_keep_request_order(ranked):
    rewards = ranked["rewards"]
    assert sorted(ranked["ranking"]) == list(range(len(RESPONSES)))
    assert [rewards[i] for i in ranked["ranking"]] == sorted(rewards, reverse=True)
    # responses 0 and 4 are the same text, so the same reward: 0 comes first
    assert ranked["ranking"].index(0) < ranked["ranking"].index(4)


def test_first_choice_probabilities_are_the_softmax_of_reward_over_temperature(ranked, temperature):
    logits = np.array(ranked["rewards"]) / temperature
    expected = np.exp(logits) / np.exp(logits).sum()
    assert ranked["p_best"] == pytest.approx(expected.tolist(), abs=1e-9)
    assert sum(ranked["p_best"]) == pytest.approx(1)


def test_the_pairwise_matrix_is_bradley_terry_and_agrees_with_pairwise_compare(client, ranked, temperature):
    matrix = np.array(ranked["p_better"])
    rewards = np.array(ranked["rewards"])
    assert matrix.shape == (5, 5)
    assert matrix == pytest.approx(1 / (1 + np.exp(-(rewards[:, None] - rewards[None, :]) / temperature)))
    assert matrix + matrix.T == pytest.approx(np.ones((5, 5)))
    assert np.diag(matrix) == pytest.approx(0.5)
    pair = {"prompt": PROMPT, "a": RESPONSES[1], "b": RESPONSES[2]}
    (result,) = client.post("/compare", json={"items": [pair]}).json()["results"]
    assert result["p_a_better"] == pytest.approx(matrix[1, 2], abs=1e-6)


def test_the_matrix_can_be_left_out(client, ranked):
    answer = client.post("/compare", json={"prompt": PROMPT, "responses": RESPONSES, "pairwise": False}).json()
    assert answer["p_better"] is None
    assert answer["p_best"] == pytest.approx(ranked["p_best"])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": PROMPT, "responses": ["only one"]}, 422, "responses: List should have at least 2 items"),
        ({"prompt": PROMPT}, 422, "items: required (or one prompt or messages with responses)"),
        ({"responses": ["a", "b"]}, 422, "prompt: required (or messages, the chat form)"),
        (
            {"items": [{"prompt": "p", "a": "a", "b": "b"}], "responses": ["a", "b"]},
            422,
            "responses: not with items",
        ),
        ({"prompt": PROMPT, "responses": ["r"] * 9}, 413, "responses: 9 items, at most 8 per request"),
    ],
)
def test_malformed_k_wise_bodies_name_the_field(client, body, status, message):
    answer = client.post("/compare", json=body)
    assert answer.status_code == status
    assert answer.json()["error"].startswith(message)


def test_the_matrix_has_a_size_limit_and_the_rest_does_not(tiny_bundle):
    settings = Settings(bundle=tiny_bundle, cache_size=0, max_items_per_request=300)
    responses = [f" answer {i}" for i in range(257)]
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        refused = client.post("/compare", json={"prompt": PROMPT, "responses": responses})
        assert refused.status_code == 413
        assert refused.json()["error"].startswith("responses: 257 responses would answer a 257 x 257 p_better matrix")
        ranked = client.post("/compare", json={"prompt": PROMPT, "responses": responses, "pairwise": False})
        assert ranked.status_code == 200 and len(ranked.json()["ranking"]) == 257
