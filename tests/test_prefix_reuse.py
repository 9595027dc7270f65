"""GRPO groups: responses that share a prompt are scored after the prompt's keys and values, the
prompt run once, and get their whole sequences' rewards as the model card computes them
(`model(**tokenizer.apply_chat_template(conversation)).logits[0][0]`): grouped in one request,
interleaved across concurrent one-sample requests, truncated, and where the tokenizer merges a
token across the join between prompt and response (that sequence runs whole, and is counted).

A Qwen3-style chat RM built from a config, exported (its prefix graph checked against PyTorch at
export) and served over HTTP on loopback with its real ONNX Runtime session; and the same bundle
in-process, as `rewardserve eval` and `rewardserve score --bundle` run it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from live import free_port, running
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardserve.bundle import BundleRuntime, load_bundle
from rewardserve.client.scorers import LocalScorer
from rewardserve.data.hh import prompt_turns
from rewardserve.export.onnx_export import export_bundle
from rewardserve.export.source import OutputOptions
from rewardserve.service import Settings
from rewardserve.testing.chat_models import build_chat_rm, export_chat_rm, policy_text

TOLERANCE = 1e-4
GROUP = 4  # responses sampled per prompt


@pytest.fixture(scope="module")
def chat_rm(tmp_path_factory, chat_texts, heldout_pairs) -> tuple[Path, Path]:
    """(checkpoint, bundle) of a scalar Qwen3-style chat RM, written from its weights at export."""
    checkpoint = build_chat_rm("qwen3", tmp_path_factory.mktemp("prefix-rm"), chat_texts)
    out = tmp_path_factory.mktemp("bundles") / "prefix-rm"
    return checkpoint, export_chat_rm(checkpoint, out, heldout_pairs, OutputOptions())


@pytest.fixture(scope="module")
def groups(heldout_pairs) -> list[tuple[list[dict], list[str]]]:
    """GRPO-shaped held-out HH groups: a conversation so far, and GROUP responses to it (HH's
    own two, then other examples' responses standing in for more samples)."""
    examples = [e for e in heldout_pairs if 300 < len(e.prompt) < 1200 and max(map(len, e.responses)) < 600][:3]
    others = [r for e in heldout_pairs[100:140] for r in e.responses if len(r) < 600]
    return [
        (prompt_turns(e.prompt), [*e.responses, *others[2 * i : 2 * i + GROUP - 2]]) for i, e in enumerate(examples)
    ]


@pytest.fixture(scope="module")
def text_rm(tmp_path_factory, train_pairs, heldout_pairs) -> tuple[Path, Path]:
    """(checkpoint, bundle) of a Llama-style decoder RM that reads `prompt + response` as text."""
    from conftest import build_decoder

    texts = [e.prompt + r for e in train_pairs[:200] for r in e.responses]
    checkpoint = build_decoder("llama", tmp_path_factory.mktemp("text-rm"), texts)
    out = tmp_path_factory.mktemp("bundles") / "text-rm"
    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    export_bundle(checkpoint, out, parity, name=out.name, max_length=512)
    return checkpoint, out


@contextlib.contextmanager
def served_engine_inputs(checkpoint: Path) -> Iterator[Callable[[np.ndarray], float]]:
    """The PyTorch model's reward of a whole sequence of token ids."""
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        yield lambda ids: float(model(input_ids=torch.from_numpy(ids)[None]).logits[0][0])


def card_rewards(checkpoint: Path, conversations: list[tuple[list[dict], str]]) -> np.ndarray:
    """The model card's reward of each (conversation so far, response)."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    rewards = []
    with torch.inference_mode():
        for prompt, response in conversations:
            conversation = [*prompt, {"role": "assistant", "content": response}]
            inputs = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)
            rewards.append(float(model(**inputs).logits[0][0]))
    return np.array(rewards)


def serve(bundle: Path, **settings):
    return running(Settings(bundle=bundle, port=free_port(), cache_size=0, **settings))


def metric(url: str, name: str) -> float:
    """The sum of a Prometheus metric's samples (every label) on /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def flat(groups) -> list[tuple[list[dict], str]]:
    return [(prompt, response) for prompt, responses in groups for response in responses]


# ---------------------------------------------------------------- export


def test_export_writes_the_prefix_graph_and_checks_it_against_pytorch(chat_rm):
    manifest = load_bundle(chat_rm[1])
    assert manifest.prefix is not None and manifest.prefix.file in manifest.files
    assert manifest.prefix.sequences >= 64 and manifest.prefix.max_abs_diff <= TOLERANCE
    runtime = BundleRuntime(chat_rm[1], prefix_reuse=True)
    assert runtime.prefix is not None and runtime.graph.name == manifest.prefix.file
    off = BundleRuntime(chat_rm[1], prefix_reuse=False)
    assert off.prefix is None and off.graph.name == manifest.model_file and "PREFIX_REUSE=0" in off.prefix_refused


# ---------------------------------------------------------------- served, against the model card


def test_k_responses_to_one_prompt_run_the_prompt_once_and_get_the_model_cards_rewards(chat_rm, groups):
    checkpoint, bundle = chat_rm
    expected = card_rewards(checkpoint, flat(groups))
    with serve(bundle) as server:
        assert metric(server.url, "rewardserve_prefix_reuse") == 1
        served = []
        for prompt, responses in groups:  # K-wise /compare: one request per group
            body = {"messages": prompt, "responses": responses}
            served += httpx.post(f"{server.url}/compare", json=body, timeout=120).json()["rewards"]
        # /score with the prompt repeated: one group again, answered after the kept prompt.
        prompt, responses = groups[0]
        items = [{"messages": [*prompt, {"role": "assistant", "content": r}]} for r in responses]
        again = httpx.post(f"{server.url}/score", json={"items": items}, timeout=120).json()["rewards"]
        hits, prompts = (
            metric(server.url, "rewardserve_prefix_hits_total"),
            metric(server.url, "rewardserve_prefix_prompts_total"),
        )
        saved = metric(server.url, "rewardserve_prefix_tokens_saved_total")
    assert np.abs(np.array(served) - expected).max() <= TOLERANCE
    assert np.abs(np.array(again) - expected[:GROUP]).max() <= TOLERANCE
    # Each prompt ran once; every other response of its group (and the repeat) read it.
    assert prompts == len(groups)
    assert hits == len(groups) * (GROUP - 1) + GROUP
    assert saved > 100 * hits


def test_one_sample_requests_of_interleaved_groups_share_their_prompts(chat_rm, groups):
    """OpenRLHF and verl send each sample alone, as policy-formatted text, all groups at once."""
    checkpoint, bundle = chat_rm
    samples = flat(groups)
    expected = card_rewards(checkpoint, samples)
    order = list(range(len(samples)))
    random.Random(0).shuffle(order)

    async def send_all(url: str) -> dict[int, float]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:

            async def one(i: int) -> float:
                query = policy_text("chatml", *samples[i])[1]
                answer = await client.post("/get_reward", json={"query": [query]})
                return answer.json()["rewards"][0]

            return dict(zip(order, await asyncio.gather(*(one(i) for i in order)), strict=True))

    with serve(bundle) as server:
        served = asyncio.run(send_all(server.url))
        hits = metric(server.url, "rewardserve_prefix_hits_total")
    assert np.abs(np.array([served[i] for i in range(len(samples))]) - expected).max() <= TOLERANCE
    assert hits >= len(groups) * (GROUP - 2)  # at most one response per group ran before its prompt was known


def test_truncated_prompts_share_only_where_their_kept_tokens_are_equal(chat_rm, groups):
    """A conversation over max_length loses its earliest turns, as many as each response needs:
    responses of different lengths keep different prompts, and each is read after its own."""
    checkpoint, bundle = chat_rm
    runtime = BundleRuntime(bundle, prefix_reuse=False)
    long_prompt = [turn for prompt, _ in groups for turn in prompt] * 3  # several HH conversations in a row
    responses = [r for _, rs in groups for r in rs][:6]
    sequences = runtime.encoder.encode([long_prompt] * len(responses), responses)
    assert all(s.prompt_cut > 0 for s in sequences)
    with served_engine_inputs(checkpoint) as model:  # the whole truncated sequence, in PyTorch
        expected = np.array([model(s.ids) for s in sequences])
    items = [{"messages": [*long_prompt, {"role": "assistant", "content": r}]} for r in responses]
    with serve(bundle) as server:
        served = httpx.post(f"{server.url}/score", json={"items": items}, timeout=120).json()["rewards"]
        prompts = metric(server.url, "rewardserve_prefix_prompts_total")
    assert np.abs(np.array(served) - expected).max() <= TOLERANCE
    kept_prompts = {s.ids[: s.response_start].tobytes() for s in sequences}
    assert prompts == len(kept_prompts)


def test_a_token_merged_across_the_join_runs_the_sequence_whole_and_is_counted(text_rm, groups):
    """A decoder reading `prompt + response` as one text: a response that completes the prompt's
    last word merges a token across the join, so that sequence's prompt tokens are not the
    prompt's own. It runs whole; the others of its group still share the prompt."""
    checkpoint, bundle = text_rm
    prompt = "\n\nHuman: What should I read next?\n\nAssistant: Th" * 8  # over PREFIX_MIN_TOKENS
    responses = ["e classics never get old.", " I would pick a mystery.", " Something short and fun."]
    runtime = BundleRuntime(bundle, prefix_reuse=False)
    sequences = runtime.encoder.encode([prompt] * 3, responses)
    assert [s.merged_at_join for s in sequences] == [True, False, False]
    with served_engine_inputs(checkpoint) as model:
        expected = [model(s.ids) for s in sequences]
    with serve(bundle) as server:
        body = {"prompt": prompt, "responses": responses}
        served = httpx.post(f"{server.url}/compare", json=body, timeout=120).json()["rewards"]
        whole = metric(server.url, 'rewardserve_prefix_whole_sequences_total{reason="merged_at_join"}')
        hits = metric(server.url, "rewardserve_prefix_hits_total")
    assert np.abs(np.array(served) - expected).max() <= TOLERANCE
    assert whole == 1 and hits == 1


def test_prefix_reuse_off_scores_every_sequence_whole_with_the_same_rewards(chat_rm, groups):
    checkpoint, bundle = chat_rm
    prompt, responses = groups[0]
    expected = card_rewards(checkpoint, [(prompt, r) for r in responses])
    with serve(bundle, prefix_reuse=False) as server:
        served = httpx.post(
            f"{server.url}/compare", json={"messages": prompt, "responses": responses}, timeout=120
        ).json()["rewards"]
        assert metric(server.url, "rewardserve_prefix_reuse") == 0
        assert metric(server.url, "rewardserve_prefix_prompts_total") == 0
    assert np.abs(np.array(served) - expected).max() <= TOLERANCE


# ---------------------------------------------------------------- offline: eval and score in-process


def test_offline_scoring_runs_each_shared_prompt_once_with_the_model_cards_rewards(
    chat_rm, groups, heldout_pairs, monkeypatch
):
    """`rewardserve eval` (pairs: two responses to a prompt) and `rewardserve score --bundle` (items
    in any order) in-process: a prompt that several items share runs once; an item whose prompt
    nobody shares runs whole."""
    checkpoint, bundle = chat_rm
    scorer = LocalScorer(bundle)
    prefix = scorer.runtime.prefix
    assert prefix is not None
    prompts_run = []
    run_prompt = prefix.prompt_states
    monkeypatch.setattr(prefix, "prompt_states", lambda ids: prompts_run.append(len(ids)) or run_prompt(ids))

    pairs = [(prompt, responses[:2]) for prompt, responses in groups]
    compared = scorer.compare([p for p, _ in pairs], [rs[0] for _, rs in pairs], [rs[1] for _, rs in pairs])
    expected = card_rewards(checkpoint, flat(pairs))
    assert np.abs(np.array([c.reward_a for c in compared]) - expected[0::2]).max() <= TOLERANCE
    assert np.abs(np.array([c.reward_b for c in compared]) - expected[1::2]).max() <= TOLERANCE
    assert len(prompts_run) == len(pairs)

    prompts_run.clear()
    fits = [e for e in heldout_pairs[200:] if 300 < len(e.prompt) < 1200 and len(e.responses[0]) < 600]
    alone = [(prompt_turns(e.prompt), e.responses[0]) for e in fits[:4]]  # within max_length: not cut
    samples = flat(groups) + alone
    order = list(range(len(samples)))
    random.Random(1).shuffle(order)
    items = [{"messages": [*samples[i][0], {"role": "assistant", "content": samples[i][1]}]} for i in order]
    expected = card_rewards(checkpoint, [samples[i] for i in order])
    assert np.abs(np.array(scorer.score_items(items)) - expected).max() <= TOLERANCE
    assert len(prompts_run) == len(groups)  # the items alone ran whole
    whole = LocalScorer(bundle, prefix_reuse=False)
    assert whole.runtime.prefix is None
    assert np.abs(np.array(whole.score_items(items)) - expected).max() <= TOLERANCE
