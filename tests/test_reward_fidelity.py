"""Every reward as the model's authors compute it: chat reward models (a Qwen3-style and a
Llama-3.1-style one) served over HTTP against the model card's own transformers code,

    model(**tokenizer.apply_chat_template(conversation, return_tensors="pt")).logits[0][0],

on held-out HH conversations sent as messages, as plain prompt/response, and as policy text in
every chat format a policy may write, including through OpenRLHF's own reward client."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from live import free_port, running
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardserve.bundle import BundleRuntime, SequenceEncoder
from rewardserve.bundle.chat import ChatTemplateError
from rewardserve.data.hh import prompt_turns
from rewardserve.service import Settings
from rewardserve.testing.chat_models import POLICY_FORMATS, build_chat_rm, policy_text

TOLERANCE = 1e-4
CONVERSATIONS = 24


@pytest.fixture(scope="module")
def conversations(heldout_pairs) -> list[list[dict]]:
    """Held-out HH conversations as messages, each ending with its chosen assistant reply; those
    within the tiny models' 1024 positions (the reference has no truncation)."""
    examples = [e for e in heldout_pairs if len(e.prompt) + len(e.responses[0]) < 1500][:CONVERSATIONS]
    return [[*prompt_turns(e.prompt), {"role": "assistant", "content": e.responses[0]}] for e in examples]


@pytest.fixture(scope="module", params=["qwen3", "llama3", "gemma2"])
def chat_rm(request, tmp_path_factory, train_pairs, heldout_pairs) -> tuple[Path, Path]:
    """(checkpoint, bundle): a tiny chat RM and what `export` made of it."""
    from rewardserve.export.onnx_export import export_bundle

    texts = [e.prompt + r for e in train_pairs[:200] for r in e.responses]
    checkpoint = build_chat_rm(request.param, tmp_path_factory.mktemp(request.param), texts)
    bundle = tmp_path_factory.mktemp("bundles") / request.param
    parity = [(e.prompt, r) for e in heldout_pairs[:128] for r in e.responses]
    export_bundle(checkpoint, bundle, parity, name=request.param, max_length=1024)
    return checkpoint, bundle


@pytest.fixture(scope="module")
def reference(chat_rm, conversations) -> np.ndarray:
    """The model card's computation on each conversation, in fp32 with transformers."""
    checkpoint, _ = chat_rm
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        return np.array(
            [
                float(model(**tokenizer.apply_chat_template(c, return_tensors="pt", return_dict=True)).logits[0][0])
                for c in conversations
            ]
        )


@pytest.fixture(scope="module")
def url(chat_rm):
    with running(Settings(bundle=chat_rm[1], port=free_port(), cache_size=0)) as server:
        yield server.url


def score(url: str, body: dict) -> np.ndarray:
    answer = httpx.post(f"{url}/score", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["rewards"])


def test_export_recorded_the_reference_check(chat_rm):
    manifest = BundleRuntime(chat_rm[1]).manifest
    assert manifest.graph.builder == "decoder"  # written from the weights, attention fused
    assert manifest.graph.fused_operators["GroupQueryAttention"] == 2
    assert manifest.input_format.layout == "chat"
    assert "apply_chat_template" in manifest.reference.usage
    assert manifest.reference.conversations >= 64
    assert manifest.reference.max_abs_diff <= TOLERANCE


def test_conversations_as_messages_get_the_model_cards_reward(url, conversations, reference):
    rewards = score(url, {"items": [{"messages": c} for c in conversations]})
    np.testing.assert_allclose(rewards, reference, atol=TOLERANCE, rtol=0)


def test_plain_prompt_and_response_are_a_user_turn_and_an_assistant_turn(url, chat_rm, conversations):
    single_turns = [c[-2:] for c in conversations]  # the last user message and the reply
    checkpoint, _ = chat_rm
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        expected = [
            float(model(**tokenizer.apply_chat_template(c, return_tensors="pt", return_dict=True)).logits[0][0])
            for c in single_turns
        ]
    items = [{"prompt": user["content"], "response": reply["content"]} for user, reply in single_turns]
    np.testing.assert_allclose(score(url, {"items": items}), expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("policy", sorted(POLICY_FORMATS))
def test_policy_text_in_any_format_gets_the_reward_of_the_conversation(url, conversations, reference, policy):
    texts = [policy_text(policy, c[:-1], c[-1]["content"]) for c in conversations]
    queries = {"query": [query for _, query in texts], "prompts": [prompt for prompt, _ in texts]}
    answer = httpx.post(f"{url}/get_reward", json=queries, timeout=60)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["rewards"], reference, atol=TOLERANCE, rtol=0)
    # /score takes the same text as a policy-formatted prompt and its response
    items = [{"prompt": prompt, "response": query[len(prompt) :]} for prompt, query in texts]
    np.testing.assert_allclose(score(url, {"items": items, "policy_format": "auto"}), reference, atol=TOLERANCE)


@pytest.mark.parametrize("urls", [1, 2], ids=["one-url", "two-urls"])
def test_openrlhfs_own_client_gets_the_conversations_reward(url, conversations, reference, urls):
    agent = pytest.importorskip("openrlhf.utils.agent", reason="make install adds openrlhf (without its dependencies)")
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=[f"{url}/get_reward"] * urls)
    for policy in ("chatml", "llama3"):
        texts = [policy_text(policy, c[:-1], c[-1]["content"]) for c in conversations]
        queries, prompts = [q for _, q in texts], [p for p, _ in texts]
        shards = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, [None] * len(queries)))
        assert len(shards) == urls  # the queries were split across the URLs
        rewards = [r for shard in shards for r in shard["rewards"]]
        np.testing.assert_allclose(rewards, reference, atol=TOLERANCE, rtol=0)


def test_text_that_no_format_parses_is_422_naming_the_query(url):
    body = {"query": ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello", "just some text"]}
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 422
    assert answer.json()["error_type"] == "unparseable_policy_text"
    assert answer.json()["error"].startswith("query[1]: no known chat format")


def test_policy_text_ending_with_a_user_turn_is_422(url):
    body = {"query": ["<|im_start|>user\nHi<|im_end|>\n"], "policy_format": "chatml"}
    answer = httpx.post(f"{url}/get_reward", json=body)
    assert answer.status_code == 422
    assert "query[0]: the chatml text ends with a user turn" in answer.json()["error"]


def test_truncation_drops_the_earliest_exchanges_and_keeps_the_response(chat_rm, conversations):
    checkpoint, bundle = chat_rm
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    long = next(c for c in conversations if sum(m["role"] == "user" for m in c) >= 3)
    full = len(tokenizer.apply_chat_template(long)["input_ids"])
    without_first = [*long[2:]]  # the first user turn and its reply dropped
    expected = tokenizer.apply_chat_template(without_first)["input_ids"]
    runtime = BundleRuntime(bundle)
    fmt = runtime.manifest.input_format.model_copy(update={"max_length": len(expected)})
    encoder = SequenceEncoder(runtime.encoder.tokenizer, fmt)
    (sequence,) = encoder.encode([long[:-1]], [long[-1:]])
    assert len(expected) < full
    assert sequence.ids.tolist() == expected
    assert sequence.prompt_cut == full - len(expected)


def test_one_exchange_over_the_length_is_cut_in_tokens_keeping_the_last_one(chat_rm):
    checkpoint, bundle = chat_rm
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    runtime = BundleRuntime(bundle)
    fmt = runtime.manifest.input_format.model_copy(update={"max_length": 96, "min_prompt_tokens": 16})
    encoder = SequenceEncoder(runtime.encoder.tokenizer, fmt)
    words = " ".join(["vitamins"] * 200)
    exchange = [{"role": "user", "content": words}, {"role": "assistant", "content": words}]
    expected = tokenizer.apply_chat_template(exchange)["input_ids"]
    (sequence,) = encoder.encode([exchange[:1]], [exchange[1:]])
    assert len(sequence) == 96
    assert sequence.ids[0] == expected[0] and sequence.ids[-1] == expected[-1]  # the template's first and last
    assert sequence.prompt_cut > 0 and sequence.response_cut > 0
    assert len(sequence) + sequence.prompt_cut + sequence.response_cut == len(expected)


def test_export_refuses_a_bundle_whose_ids_differ_from_the_reference(chat_rm, heldout_pairs):
    from rewardserve.export.reference import ReferenceMismatch, model_card_rewards
    from rewardserve.export.source import load_source

    checkpoint, bundle = chat_rm
    runtime = BundleRuntime(bundle)
    # what served this model before: an EOS appended after the template's rendering
    fmt = runtime.manifest.input_format
    eos_after = "{% if not add_generation_prompt %}{{ eos_token }}{% endif %}"
    appended = fmt.model_copy(update={"chat_template": fmt.chat_template + eos_after})
    runtime.encoder = SequenceEncoder(runtime.encoder.tokenizer, appended)
    inputs = [(prompt_turns(e.prompt), e.responses[0]) for e in heldout_pairs[:200]]
    eos = re.escape(repr(fmt.template_variables["eos_token"]))
    with pytest.raises(ReferenceMismatch, match=rf"^input \d+: token \d+ differs: the bundle has {eos} where"):
        model_card_rewards(checkpoint, load_source(checkpoint, max_length=1024), runtime.encoder, inputs)


def test_a_chat_template_error_names_the_pair_it_came_from(chat_rm):
    runtime = BundleRuntime(chat_rm[1])
    with pytest.raises(ChatTemplateError) as raised:
        runtime.encoder.encode(["a", [{"role": "user", "content": "b"}]], ["c", [{"role": "user", "content": "d"}]])
    assert raised.value.index == 1


def classify_rewards(url: str, path: str, bodies: list[dict]) -> list[float]:
    """What verl's reward loop reads from vLLM: `data[-1].probs[-1]`, raw with use_activation false."""
    rewards = []
    for body in bodies:
        answer = httpx.post(f"{url}{path}", json={"model": "any", "use_activation": False, **body}, timeout=60)
        assert answer.status_code == 200, answer.text
        rewards.append(answer.json()["data"][-1]["probs"][-1])
    return rewards


def test_classify_text_rendered_by_the_models_template_without_its_bos_gets_the_model_cards_reward(
    url, chat_rm, conversations, reference
):
    # verl renders with the reward model's tokenizer and strips a leading BOS string
    tokenizer = AutoTokenizer.from_pretrained(chat_rm[0])
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    if tokenizer.bos_token:
        texts = [t.removeprefix(tokenizer.bos_token) for t in texts]
    for path in ("/classify", "/v1/classify"):
        rewards = classify_rewards(url, path, [{"input": t} for t in texts])
        np.testing.assert_allclose(rewards, reference, atol=TOLERANCE, rtol=0)
    rewards = classify_rewards(url, "/classify", [{"messages": c} for c in conversations])
    np.testing.assert_allclose(rewards, reference, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("policy", ["chatml", "llama3"])
def test_slime_gets_the_model_cards_reward_for_policy_text_and_messages(url, conversations, reference, policy):
    rewards = []
    for conversation in conversations:
        prompt, query = policy_text(policy, conversation[:-1], conversation[-1]["content"])
        answer = httpx.post(f"{url}/slime", json={"prompt": prompt, "response": query[len(prompt) :], "label": ""})
        assert answer.status_code == 200, answer.text
        rewards.append(answer.json())
    np.testing.assert_allclose(rewards, reference, atol=TOLERANCE, rtol=0)
    body = {"prompt": conversations[0][:-1], "response": conversations[0][-1]["content"]}
    assert httpx.post(f"{url}/slime", json=body).json() == pytest.approx(reference[0], abs=TOLERANCE)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_verls_own_reward_model_client_gets_the_model_cards_reward(url, chat_rm, conversations, reference, engine):
    # verl's reward loop with a reward model behind its "router": it renders each rollout with the
    # reward model's template, strips the BOS, and posts /classify (vLLM) or /v1/embeddings (SGLang)
    import verl_loop

    checkpoint, _ = chat_rm
    config = verl_loop.config(checkpoint, reward_model=checkpoint, engine=engine)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    results = verl_loop.scores(config, tokenizer, conversations, router=url.removeprefix("http://"))
    np.testing.assert_allclose([r["reward_score"] for r in results], reference, atol=TOLERANCE, rtol=0)


def test_rewardserves_verl_manager_gets_the_model_cards_reward(url, chat_rm, conversations, reference):
    import verl_loop

    checkpoint, _ = chat_rm
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)  # the policy: the same family's tokenizer
    results = verl_loop.scores(verl_loop.config(checkpoint, url=url), tokenizer, conversations)
    np.testing.assert_allclose([r["reward_score"] for r in results], reference, atol=TOLERANCE, rtol=0)
