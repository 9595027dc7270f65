"""OpenRLHF's remote reward protocol, as its `remote_rm_url` client speaks it: `POST /get_reward`
with full query texts, the prompts they start with, and labels."""

from __future__ import annotations

import httpx
import pytest
from live import free_port, running

from rewardserve.service import Settings

PROMPTS = ["\n\nHuman: What is the capital of France?\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant:"]
RESPONSES = [" Paris.", " Hello! How can I help you today?"]
QUERIES = [p + r for p, r in zip(PROMPTS, RESPONSES, strict=True)]


@pytest.fixture(scope="module")
def url(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0)) as server:
        yield server.url


def scored(url: str, prompts: list[str], responses: list[str]) -> list[float]:
    items = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
    return httpx.post(f"{url}/score", json={"items": items}).json()["rewards"]


def test_get_reward_scores_each_query_split_after_its_prompt(url):
    body = {"query": QUERIES, "prompts": PROMPTS, "labels": ["", None], "a_field_of_a_newer_openrlhf": 1}
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 200
    result = answer.json()
    assert result["rewards"] == pytest.approx(scored(url, PROMPTS, RESPONSES), abs=1e-6)
    assert result["scores"] == result["rewards"]
    assert result["extra_logs"] == {}


def test_without_prompts_a_whole_query_is_the_response(url):
    result = httpx.post(f"{url}/get_reward", json={"query": QUERIES}).json()
    assert result["rewards"] == pytest.approx(scored(url, ["", ""], QUERIES), abs=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": QUERIES, "prompts": PROMPTS[::-1]}, "query[0]: does not start with prompts[0]"),
        ({"query": QUERIES, "prompts": PROMPTS[:1]}, "prompts: 1 prompts for 2 queries"),
        ({"query": []}, "query: List should have at least 1 item"),
    ],
)
def test_queries_that_do_not_fit_their_prompts_are_422(url, body, message):
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 422
    assert message in answer.json()["error"]
