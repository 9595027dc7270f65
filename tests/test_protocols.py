"""The protocols other projects speak, on a live server of the default (HH-trained) bundle:
vLLM's `/classify`, `/v1/classify` and `/pooling`, SGLang's `/v1/embeddings`, slime's remote
reward model, and what routers ask a replica (`/v1/models`, `/get_load`, `/server_info`,
`/model_info`). Each reward equals `/score`'s for the same conversation.
(Chat reward models: test_reward_fidelity.py; verl's own code: test_verl.py.)"""

from __future__ import annotations

import math

import httpx
import pytest
from live import free_port, running

from rewardserve.service import Settings

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "Fine, thanks. And you?"},
    ],
]
# The same conversations as HH transcripts: the text a policy trained on HH writes
TRANSCRIPTS = [
    "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
    "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Fine, thanks. And you?",
]


@pytest.fixture(scope="module")
def url(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0, max_text_chars=2000)) as server:
        yield server.url


@pytest.fixture(scope="module")
def rewards(url) -> list[float]:
    """/score's rewards of CONVERSATIONS."""
    answer = httpx.post(f"{url}/score", json={"items": [{"messages": c} for c in CONVERSATIONS]})
    return answer.json()["rewards"]


def post(url: str, path: str, body: dict) -> dict:
    answer = httpx.post(f"{url}{path}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("path", ["/classify", "/v1/classify"])
def test_classify_answers_the_raw_reward_of_each_text_when_asked_without_activation(url, rewards, path):
    # verl's request: any model name, text input, use_activation false, read data[-1].probs[-1]
    answer = post(url, path, {"model": "whatever/name", "input": TRANSCRIPTS, "use_activation": False})
    assert [d["probs"] for d in answer["data"]] == [[pytest.approx(r, abs=1e-5)] for r in rewards]
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert {d["num_classes"] for d in answer["data"]} == {1}
    assert answer["object"] == "list" and answer["id"].startswith("classify-")
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 10


def test_classify_answers_a_sigmoid_by_default_and_older_clients_activation_flag_is_honoured(url, rewards):
    activated = post(url, "/classify", {"input": TRANSCRIPTS[0]})
    assert activated["data"][0]["probs"] == [pytest.approx(sigmoid(rewards[0]), abs=1e-5)]
    assert activated["data"][0]["label"] == "LABEL_0"
    raw = post(url, "/classify", {"input": TRANSCRIPTS[0], "activation": False})
    assert raw["data"][0]["probs"] == [pytest.approx(rewards[0], abs=1e-5)]


def test_classify_scores_a_conversation_sent_as_messages(url, rewards):
    answer = post(url, "/classify", {"messages": CONVERSATIONS[1], "use_activation": False, "priority": 0})
    assert answer["data"][0]["probs"] == [pytest.approx(rewards[1], abs=1e-5)]


def test_pooling_and_embeddings_answer_the_raw_reward(url, rewards):
    pooled = post(url, "/pooling", {"model": "m", "input": TRANSCRIPTS})
    assert [d["data"] for d in pooled["data"]] == [[pytest.approx(r, abs=1e-5)] for r in rewards]
    assert pooled["data"][0]["object"] == "pooling"
    # verl with an SGLang backend reads data[-1].embedding[-1]
    embedded = post(url, "/v1/embeddings", {"model": "m", "input": TRANSCRIPTS[1]})
    assert embedded["data"][-1]["embedding"][-1] == pytest.approx(rewards[1], abs=1e-5)
    assert embedded["data"][-1]["object"] == "embedding"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input": [1, 2, 3]}, 422, "input: token ids are not scored"),
        ({"input": [[1, 2], [3]]}, 422, "input: token ids are not scored"),
        ({"model": "m"}, 422, "input: required, or messages"),
        ({"input": "x", "messages": CONVERSATIONS[0]}, 422, "input: required, or messages (not both)"),
        ({"input": TRANSCRIPTS[0], "chat_template": "{{ messages }}"}, 422, "chat_template: not accepted"),
        ({"input": TRANSCRIPTS[0], "truncate_prompt_tokens": 8}, 422, "truncate_prompt_tokens: 8: only -1"),
        ({"messages": CONVERSATIONS[0][:1]}, 422, "messages: the last message is the response"),
        ({"input": "no turns in this text"}, 422, "input[0]: "),
        ({"input": "\n\nHuman: hi\n\nAssistant: " + "long " * 350}, 413, "input[0]: "),
    ],
)
def test_classify_refuses_what_it_would_otherwise_score_wrongly(url, body, status, message):
    answer = httpx.post(f"{url}/classify", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"].startswith(message)


def test_a_sequence_over_the_models_length_is_cut_by_its_policy_with_truncate_prompt_tokens(url):
    body = {"input": "\n\nHuman: " + "long " * 350 + "\n\nAssistant: short", "truncate_prompt_tokens": -1}
    assert len(post(url, "/classify", body)["data"]) == 1


@pytest.mark.parametrize("path", ["/classify", "/pooling", "/v1/embeddings"])
def test_an_over_long_input_is_refused_naming_the_field_its_own_endpoint_cuts_with(url, path):
    answer = httpx.post(
        f"{url}{path}", json={"model": "m", "input": "\n\nHuman: " + "long " * 350 + "\n\nAssistant: x"}
    )
    assert answer.status_code == 413
    assert '"truncate_prompt_tokens": -1' in answer.json()["error"] and '"truncate"' not in answer.json()["error"]
    scored = httpx.post(f"{url}/score", json={"items": [{"prompt": "long " * 350, "response": "x"}], "truncate": False})
    assert scored.status_code == 413 and 'send "truncate": true' in scored.json()["error"]


def test_slime_gets_a_bare_number_for_policy_text_or_messages(url, rewards):
    # slime posts {prompt, response, label} per sample; the prompt in the policy's template
    prompt, response = TRANSCRIPTS[0].split(" Paris.")[0], " Paris."
    assert post(url, "/slime", {"prompt": prompt, "response": response, "label": "Paris"}) == pytest.approx(
        rewards[0], abs=1e-5
    )
    answer = post(url, "/slime", {"prompt": CONVERSATIONS[1][:-1], "response": "Fine, thanks. And you?", "label": None})
    assert answer == pytest.approx(rewards[1], abs=1e-5)


def test_slime_details_answer_a_dict_read_with_reward_key(url, rewards):
    answer = post(url, "/slime/details", {"prompt": CONVERSATIONS[0][:-1], "response": "Paris.", "extra": 1})
    assert answer == {"reward": pytest.approx(rewards[0], abs=1e-5)}


def test_routers_see_the_model_and_the_load(url):
    (model,) = httpx.get(f"{url}/v1/models").json()["data"]
    assert (model["id"], model["object"], model["max_model_len"]) == ("tiny-test-model", "model", 128)
    assert httpx.get(f"{url}/get_load").json() == {"load": 0}
    info = httpx.get(f"{url}/model_info").json()
    assert info["is_generation"] is False and info["num_labels"] == 1
    server = httpx.get(f"{url}/server_info").json()
    assert server["ready"] is True and server["load"] == 0
