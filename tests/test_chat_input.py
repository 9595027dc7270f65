"""Chat input: `{"messages": [...]}` wherever items are taken, rendered with the bundle's chat
template into the same (prompt, response) texts that the text form sends."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient
from test_api import wait_ready

from rewardserve.service import Settings, create_app

QUESTION = "What is the capital of France?"
CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": QUESTION},
]
# The tiny bundle's template is the HH transcript layout its pairs were trained on.
HH_PROMPT = f"\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: {QUESTION}"


def reply(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def client(tiny_bundle):
    with TestClient(create_app(Settings(bundle=tiny_bundle, cache_size=0, max_text_chars=1000))) as client:
        wait_ready(client)
        yield client


def rewards(client: TestClient, items: list[dict]) -> list[float]:
    answer = client.post("/score", json={"items": items})
    assert answer.status_code == 200, answer.text
    return answer.json()["rewards"]


def test_a_conversation_scores_as_its_transcript_with_the_last_assistant_message_as_response(client):
    chat = rewards(client, [{"messages": [*CONVERSATION, reply("Paris.")]}, {"messages": [reply("Alone.")]}])
    text = rewards(client, [{"prompt": HH_PROMPT, "response": "Paris."}, {"prompt": "", "response": "Alone."}])
    assert chat == pytest.approx(text, abs=1e-6)


def test_chat_and_text_items_mix_in_one_request(client):
    mixed = rewards(
        client, [{"prompt": HH_PROMPT, "response": "Paris."}, {"messages": [*CONVERSATION, reply("Lyon.")]}]
    )
    assert mixed == pytest.approx(rewards(client, [{"prompt": HH_PROMPT, "response": r} for r in ("Paris.", "Lyon.")]))


def test_compare_takes_the_prompt_as_messages(client):
    chat = client.post("/compare", json={"items": [{"messages": CONVERSATION, "a": "Paris.", "b": "Rome."}]})
    text = client.post("/compare", json={"items": [{"prompt": HH_PROMPT, "a": "Paris.", "b": "Rome."}]})
    assert chat.json()["results"][0] == pytest.approx(text.json()["results"][0])


def test_k_wise_compare_takes_the_prompt_as_messages(client):
    responses = ["Paris.", "Rome.", "I do not know."]
    chat = client.post("/compare", json={"messages": CONVERSATION, "responses": responses}).json()
    text = client.post("/compare", json={"prompt": HH_PROMPT, "responses": responses}).json()
    assert chat["rewards"] == pytest.approx(text["rewards"], abs=1e-6)


def test_a_message_over_the_text_limit_is_413_naming_it(client):
    messages = [{"role": "user", "content": "x" * 1001}, reply("ok")]
    answer = client.post("/score", json={"items": [{"prompt": "p", "response": "r"}, {"messages": messages}]})
    assert answer.status_code == 413
    assert answer.json()["error"].startswith("items[1].messages[0].content: 1001 characters, at most 1000")


CHATML = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ raise_exception('system messages are not supported') }}{% endif %}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def chatml_client(tiny_bundle, tmp_path_factory):
    """The tiny bundle with a ChatML template in its manifest (checksums cover the other files)."""
    bundle = tmp_path_factory.mktemp("chatml") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["input_format"]["chat_template"] = CHATML
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(bundle=bundle, cache_size=0))) as client:
        wait_ready(client)
        yield client


def test_the_bundles_own_template_renders_the_conversation(chatml_client):
    chat = rewards(chatml_client, [{"messages": [{"role": "user", "content": QUESTION}, reply("Paris.")]}])
    prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    assert chat == pytest.approx(rewards(chatml_client, [{"prompt": prompt, "response": "Paris.<|im_end|>\n"}]))


def test_a_conversation_the_template_refuses_is_422_naming_the_item(chatml_client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}, reply("Paris.")]
    ok = {"messages": [{"role": "user", "content": QUESTION}, reply("Paris.")]}
    answer = chatml_client.post("/score", json={"items": [ok, {"messages": messages}]})
    assert answer.status_code == 422
    assert answer.json() == {
        "error": "items[1].messages: chat template: system messages are not supported",
        "error_type": "invalid_conversation",
    }
    assert chatml_client.post("/score", json={"items": [ok]}).status_code == 200
