"""OpenRLHF's remote reward protocol, as its `remote_rm_url` client speaks it: `POST /get_reward`
with full query texts, the prompts they start with, and labels. The queries are policy text,
parsed back into the conversation they spell (test_reward_fidelity.py checks every format against
the model card's computation); here, HH transcripts to the HH bundle."""

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


def conversation_scored(url: str, conversations: list[list[dict]]) -> list[float]:
    items = [{"messages": messages} for messages in conversations]
    return httpx.post(f"{url}/score", json={"items": items}).json()["rewards"]


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}],
]


def test_get_reward_scores_each_query_as_the_conversation_it_spells(url):
    body = {"query": QUERIES, "prompts": PROMPTS, "labels": ["", None], "a_field_of_a_newer_openrlhf": 1}
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 200
    result = answer.json()
    assert result["rewards"] == pytest.approx(conversation_scored(url, CONVERSATIONS), abs=1e-6)
    assert result["scores"] == result["rewards"]
    assert result["extra_logs"] == {}
    # and so, for this HH-trained bundle, as training split the transcripts
    assert result["rewards"] == pytest.approx(
        scored(url, [p.removesuffix("\n\nAssistant:") for p in PROMPTS], [r.strip() for r in RESPONSES]), abs=1e-6
    )


def test_raw_queries_are_split_after_their_prompts_as_they_are(url):
    body = {"query": QUERIES, "prompts": PROMPTS, "policy_format": "raw"}
    result = httpx.post(f"{url}/get_reward", json=body).json()
    assert result["rewards"] == pytest.approx(scored(url, PROMPTS, RESPONSES), abs=1e-6)
    # without prompts, a whole raw query is the response
    result = httpx.post(f"{url}/get_reward", json={"query": QUERIES, "policy_format": "raw"}).json()
    assert result["rewards"] == pytest.approx(scored(url, ["", ""], QUERIES), abs=1e-6)


def test_empty_lists_get_empty_rewards(url):
    # OpenRLHF 0.9.10-0.11.0 sends empty shards to all but one of several reward URLs
    answer = httpx.post(f"{url}/get_reward", json={"query": [], "prompts": [], "labels": []})
    assert answer.status_code == 200
    assert answer.json() == {"rewards": [], "scores": [], "extra_logs": {}}


def test_a_server_set_to_score_unparsed_text_raw_does(tiny_bundle):
    settings = Settings(bundle=tiny_bundle, port=free_port(), cache_size=0, unparsed_policy_text="raw")
    with running(settings) as server:
        result = httpx.post(f"{server.url}/get_reward", json={"query": ["plain text"]}).json()
        assert result["rewards"] == pytest.approx(scored(server.url, [""], ["plain text"]), abs=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": QUERIES, "prompts": PROMPTS[::-1]}, "query[0]: does not start with prompts[0]"),
        ({"query": QUERIES, "prompts": PROMPTS[:1]}, "prompts: 1 prompts for 2 queries"),
        ({"query": QUERIES, "policy_format": "vicuna"}, "policy_format: 'vicuna': not a policy format"),
    ],
)
def test_queries_that_do_not_fit_their_prompts_are_422(url, body, message):
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 422
    assert message in answer.json()["error"]
