"""Judges: a causal LM's verdict token served as a reward, in one forward pass, equal to what the
judge's users compute with transformers,

    p = softmax(AutoModelForCausalLM(tokenizer(apply_chat_template(judge, add_generation_prompt=True,
                tokenize=False) + answer_prefix)).logits[0, -1])      # over the whole vocabulary

then yes/no: log p(yes) - log p(no); rating: sum k p(k) / sum p(k); pairwise: p(A) renormalised
over A and B, of (a, b) and, swapped, p(B) of (b, a), averaged. Tiny causal LMs of each family
the decoder export writes (Qwen3, Llama 3, Gemma 2 with its logit soft cap, Gemma 3), built from
configs, judge held-out HH conversations served over HTTP."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from live import free_port, running
from transformers import AutoModelForCausalLM, AutoTokenizer

from rewardserve.bundle import BundleRuntime, load_bundle
from rewardserve.bundle.judge import JudgeTemplate, Verdict, pairwise
from rewardserve.bundle.offline import score_sequences
from rewardserve.bundle.prefix import PrefixRunner
from rewardserve.data.hh import prompt_turns
from rewardserve.export.judge_source import JudgeFile, read_judge
from rewardserve.export.onnx_export import export_bundle
from rewardserve.export.source import OutputOptions
from rewardserve.service import Settings
from rewardserve.testing.chat_models import build_judge_lm

TOLERANCE = 1e-4
CONVERSATIONS = 32
# A rating judge of our own, given as a file: scores " 1".." 5" after "Score:", which the tiny
# tokenizers keep as one token each (trained on text that holds them).
RATING = {
    "rule": "rating",
    "system": "You are a careful grader.",
    "rubric": "Conversation:\n{prompt}\n\nReply:\n{response}\n\nGrade the reply from 1 (poor) to 5 (excellent).",
    "answer_prefix": "Score:",
    "verdicts": {str(k): f" {k}" for k in range(1, 6)},
}
FAMILIES = ["qwen3", "llama3", "gemma2", "gemma3"]


@pytest.fixture(scope="module")
def rating_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("judge-file") / "rating.json"
    path.write_text(json.dumps(RATING))
    return path


@pytest.fixture(scope="module", params=FAMILIES)
def judge_lm(request, tmp_path_factory, judge_texts) -> tuple[str, Path]:
    return request.param, build_judge_lm(request.param, tmp_path_factory.mktemp(request.param), judge_texts)


def export_judge(checkpoint: Path, out: Path, judge: str, heldout_pairs, **options) -> Path:
    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    export_bundle(
        checkpoint, out, parity, name=out.name, max_length=1024, output_options=OutputOptions(judge=judge), **options
    )
    return out


@pytest.fixture(scope="module", params=["yes_no", "rating"])
def judge(request, judge_lm, rating_file, tmp_path_factory, heldout_pairs) -> tuple[Path, Path, dict]:
    """(checkpoint, bundle, the judge's file): each family as the yes/no preset and as a rating file."""
    family, checkpoint = judge_lm
    spec = read_judge("helpfulness").model_dump() if request.param == "yes_no" else RATING
    name = "helpfulness" if request.param == "yes_no" else str(rating_file)
    bundle = export_judge(
        checkpoint, tmp_path_factory.mktemp("bundles") / f"{family}-{request.param}", name, heldout_pairs
    )
    return checkpoint, bundle, spec


@pytest.fixture(scope="module")
def conversations(heldout_pairs) -> list[list[dict]]:
    examples = [e for e in heldout_pairs if len(e.prompt) + len(e.responses[0]) < 1200][:CONVERSATIONS]
    return [[*prompt_turns(e.prompt), {"role": "assistant", "content": e.responses[0]}] for e in examples]


def verdict_probabilities(checkpoint: Path, spec: dict, prompts: list[list[dict]], slots: list[dict]) -> np.ndarray:
    """(n, K) each verdict's probability, renormalised over the verdicts, as a judge's user computes
    it: the rubric's slots filled (`slots`: {"{response}": text} or the pair's), the model's chat
    template, the whole vocabulary's softmax at the last token."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    probabilities = []
    for prompt, filled in zip(prompts, slots, strict=True):
        shown = (
            prompt[0]["content"]
            if len(prompt) == 1
            else "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)
        )
        user = spec["rubric"].replace("{prompt}", shown)
        for slot, text in filled.items():
            user = user.replace(slot, text)
        messages = ([{"role": "system", "content": spec["system"]}] if spec.get("system") else []) + [
            {"role": "user", "content": user}
        ]
        kwargs = spec.get("chat_template_kwargs") or {}
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
        text += spec["answer_prefix"]
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        verdicts = [tokenizer(text + v, add_special_tokens=False).input_ids[-1] for v in spec["verdicts"].values()]
        with torch.inference_mode():
            p = torch.softmax(model(ids).logits[0, -1].double(), -1)
        probabilities.append((p[verdicts] / p[verdicts].sum()).numpy())
    return np.array(probabilities)


def transformers_judge(checkpoint: Path, spec: dict, conversations: list[list[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, verdict probabilities) of each conversation's last turn, then the rule:
    yes/no's log-odds, or the rating's expected score."""
    slots = [{"{response}": c[-1]["content"]} for c in conversations]
    p = verdict_probabilities(checkpoint, spec, [c[:-1] for c in conversations], slots)
    if spec["rule"] == "yes_no":
        return np.log(p[:, 0]) - np.log(p[:, 1]), p
    return p @ np.array([float(k) for k in spec["verdicts"]]), p


def transformers_preference(checkpoint: Path, spec: dict, prompt: list[dict], a: str, b: str) -> float:
    """p(a better than b) as the pairwise judge's user computes it: p(A) of (a, b) and p(B) of (b, a), averaged."""
    slots = [{"{response_a}": a, "{response_b}": b}, {"{response_a}": b, "{response_b}": a}]
    p = verdict_probabilities(checkpoint, spec, [prompt, prompt], slots)
    return 0.5 * (p[0, 0] + p[1, 1])


# ---------------------------------------------------------------- served, against transformers


def test_every_rule_of_every_family_serves_the_judges_own_transformers_computation(judge, conversations):
    checkpoint, bundle, spec = judge
    expected, probabilities = transformers_judge(checkpoint, spec, conversations)
    assert expected.std() > 100 * TOLERANCE, "the tiny judge must give rewards that differ far beyond the tolerance"
    items = [{"messages": c} for c in conversations]
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
        answer = httpx.post(f"{server.url}/score", json={"items": items}, timeout=120).json()
    assert np.abs(np.array(answer["rewards"]) - expected).max() <= TOLERANCE
    served = np.array([answer["verdicts"][label] for label in spec["verdicts"]]).T
    assert np.abs(served - probabilities).max() <= TOLERANCE
    manifest = load_bundle(bundle)
    assert manifest.reference is not None and manifest.reference.max_abs_diff <= TOLERANCE
    assert manifest.reference.by_output["verdict"] <= TOLERANCE


@pytest.fixture(scope="module")
def qwen3_helpfulness(tmp_path_factory, judge_texts, heldout_pairs) -> tuple[Path, Path, dict]:
    """A Qwen3-style LM as the helpfulness preset: one judge for the protocols."""
    checkpoint = build_judge_lm("qwen3", tmp_path_factory.mktemp("qwen3-protocols"), judge_texts)
    bundle = export_judge(checkpoint, tmp_path_factory.mktemp("bundles") / "protocols", "helpfulness", heldout_pairs)
    return checkpoint, bundle, read_judge("helpfulness").model_dump()


def test_a_judge_answers_on_every_protocol_with_its_one_reward(qwen3_helpfulness, conversations):
    checkpoint, bundle, spec = qwen3_helpfulness
    conversation = conversations[0]
    prompt, response = conversation[:-1], conversation[-1]["content"]
    (expected,), _ = transformers_judge(checkpoint, spec, [conversation])
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
        post = lambda path, body: httpx.post(f"{server.url}{path}", json=body, timeout=60).json()  # noqa: E731
        compare = post("/compare", {"messages": prompt, "responses": [response, "No idea."]})
        rewards = {
            "/score": post("/score", {"items": [{"messages": conversation}]})["rewards"][0],
            "/compare": compare["rewards"][0],
            "/get_reward": post("/get_reward", {"query": [text]})["rewards"][0],
            "/classify": post("/classify", {"model": "judge", "input": text, "use_activation": False})["data"][-1][
                "probs"
            ][-1],
            "/v1/embeddings": post("/v1/embeddings", {"model": "judge", "input": text})["data"][-1]["embedding"][-1],
            "/slime": post("/slime", {"prompt": prompt, "response": response, "label": ""}),
        }
        details = post("/get_reward", {"query": [text]})["extra_logs"]
    for path, reward in rewards.items():
        assert abs(reward - expected) <= TOLERANCE, path
    assert abs(compare["p_better"][0][1] - 1 / (1 + np.exp(compare["rewards"][1] - compare["rewards"][0]))) < 1e-6
    assert set(details) == {"p_yes", "p_no"} and abs(details["p_yes"][0] + details["p_no"][0] - 1) < 1e-6


def test_a_grpo_group_after_its_prompt_run_once_equals_each_response_run_whole(judge, heldout_pairs):
    _, bundle, _ = judge
    example = next(e for e in heldout_pairs if 400 < len(e.prompt) < 1000)
    responses = [r for e in heldout_pairs[:8] for r in e.responses][:8]
    runtime = BundleRuntime(bundle, prefix_reuse=True)
    assert runtime.prefix is not None, runtime.prefix_refused
    sequences = runtime.encoder.encode([prompt_turns(example.prompt)] * 8, responses)
    whole = score_sequences(runtime, sequences).rewards
    reused = PrefixRunner(runtime).score_sequences(sequences).rewards
    assert np.abs(whole - reused).max() <= 1e-5
    # the shared part is the judge's text up to the response: everything but the response and the rubric's end
    assert len({tuple(s.ids[: s.response_start]) for s in sequences}) == 1 and sequences[0].response_start > 64


def test_a_judge_text_over_the_models_length_is_refused_not_cut(judge):
    _, bundle, _ = judge
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
        body = {"items": [{"prompt": "word " * 3000, "response": "Fine."}]}
        answer = httpx.post(f"{server.url}/score", json=body, timeout=60)
    assert answer.status_code == 413 and "items[0]" in answer.json()["error"]
    assert "never cut" in answer.json()["error"]


# ---------------------------------------------------------------- pairwise judges, on /compare


@pytest.fixture(scope="module")
def pairwise_judge(judge_lm, tmp_path_factory, heldout_pairs) -> tuple[Path, Path, dict]:
    """(checkpoint, bundle, the judge's file): each family as the pairwise preset."""
    family, checkpoint = judge_lm
    bundle = export_judge(
        checkpoint, tmp_path_factory.mktemp("bundles") / f"{family}-pairwise", "pairwise", heldout_pairs
    )
    return checkpoint, bundle, read_judge("pairwise").model_dump()


@pytest.fixture(scope="module")
def judged_pairs(heldout_pairs) -> list[tuple[list[dict], str, str]]:
    """(prompt turns, chosen, rejected) of held-out HH pairs short enough for both in one text."""
    examples = [e for e in heldout_pairs if len(e.prompt) + sum(map(len, e.responses)) < 1200][:12]
    return [(prompt_turns(e.prompt), *e.responses) for e in examples]


def test_a_pairwise_judge_serves_its_own_preference_read_in_both_orders(pairwise_judge, judged_pairs):
    checkpoint, bundle, spec = pairwise_judge
    expected = np.array([transformers_preference(checkpoint, spec, *pair) for pair in judged_pairs])
    items = [{"messages": prompt, "a": a, "b": b} for prompt, a, b in judged_pairs]
    swapped = [{"messages": prompt, "a": b, "b": a} for prompt, a, b in judged_pairs]
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
        post = lambda body: httpx.post(f"{server.url}/compare", json=body, timeout=120).json()["results"]  # noqa: E731
        results, reversed_results = post({"items": items}), post({"items": swapped})
    served = np.array([r["p_a_better"] for r in results])
    # Both orders averaged cancel the tiny judge's position bias, and what is left is small, but
    # far beyond the tolerance: serving 0.5, or one order only, would fail.
    assert np.abs(expected - 0.5).max() > 10 * TOLERANCE
    assert np.abs(served - expected).max() <= TOLERANCE
    # consistent after the swap, and rewards whose Bradley-Terry probability is the judge's own
    assert np.abs(served + np.array([r["p_a_better"] for r in reversed_results]) - 1).max() <= 1e-6
    for r in results:
        assert abs(1 / (1 + np.exp(r["reward_b"] - r["reward_a"])) - r["p_a_better"]) <= 1e-6


def test_k_responses_to_a_pairwise_judge_are_ranked_by_bradley_terry_scores_of_its_preferences(
    pairwise_judge, judged_pairs
):
    checkpoint, bundle, spec = pairwise_judge
    prompt = judged_pairs[0][0]
    responses = [judged_pairs[0][1], judged_pairs[0][2], judged_pairs[1][1]]
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
        answer = httpx.post(f"{server.url}/compare", json={"messages": prompt, "responses": responses}, timeout=60)
    ranked = answer.json()
    matrix = np.array(ranked["p_better"])
    for i in range(3):
        for j in range(3):
            if i != j:
                expected = transformers_preference(checkpoint, spec, prompt, responses[i], responses[j])
                assert abs(matrix[i, j] - expected) <= TOLERANCE
    assert np.allclose(matrix + matrix.T, 1, atol=1e-6)
    log_odds = np.log(matrix) - np.log1p(-matrix)
    assert np.allclose(ranked["rewards"], log_odds.mean(axis=1), atol=1e-6)
    assert ranked["ranking"] == list(np.argsort(-np.array(ranked["rewards"]), kind="stable"))


def test_a_pairwise_judge_refuses_one_response_naming_the_item_and_compare(pairwise_judge):
    _, bundle, _ = pairwise_judge
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0, max_items_per_request=5)) as server:
        post = lambda path, body: httpx.post(f"{server.url}{path}", json=body, timeout=60)  # noqa: E731
        one = post("/score", {"items": [{"prompt": "Hi", "response": "Hello."}]})
        ok = post("/compare", {"items": [{"prompt": "Hi", "a": "Hello.", "b": "Go."}]})
        # 3 responses are 6 ordered pairs to read, over the 5 items a request may hold
        many = post("/compare", {"prompt": "Hi", "responses": ["Hello.", "Go.", "Hm."]})
    assert one.status_code == 422 and "items[0]" in one.json()["error"] and "/compare" in one.json()["error"]
    assert ok.status_code == 200
    assert many.status_code == 413 and "responses: a pairwise judge reads each ordered pair" in many.json()["error"]


def test_a_pairwise_group_after_its_prompt_run_once_equals_each_pair_run_whole(pairwise_judge, judged_pairs):
    _, bundle, _ = pairwise_judge
    from rewardserve.bundle.judge import ResponsePair

    prompt = judged_pairs[0][0]
    responses = [r for _, a, b in judged_pairs[:3] for r in (a, b)]
    pairs = [ResponsePair(a, b) for a in responses for b in responses if a != b]
    runtime = BundleRuntime(bundle, prefix_reuse=True)
    assert runtime.prefix is not None, runtime.prefix_refused
    sequences = runtime.encoder.encode([prompt] * len(pairs), pairs)
    whole = score_sequences(runtime, sequences).rewards
    reused = PrefixRunner(runtime).score_sequences(sequences).rewards
    assert np.abs(whole - reused).max() <= 1e-5
    assert len({tuple(s.ids[: s.response_start]) for s in sequences}) == 1


# ---------------------------------------------------------------- token-probability process rewards

STEP_TAG = " ки"  # Math-Shepherd's step tag, a word of the vocabulary (not a special token)


@pytest.fixture(scope="module")
def token_prm(judge_lm, tmp_path_factory, heldout_pairs) -> tuple[Path, Path]:
    """(checkpoint, bundle): each family's LM with no chat template, as Math-Shepherd reads text
    (`question + " " + output`), exported as a PRM by p(+) against p(-) at each step tag."""
    family, lm = judge_lm
    checkpoint = tmp_path_factory.mktemp(f"{family}-no-template")
    shutil.copytree(lm, checkpoint, dirs_exist_ok=True)
    (checkpoint / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(config))
    options = OutputOptions(step_separator=STEP_TAG, step_tokens=["+", "-"], step_scalar="min")
    bundle = tmp_path_factory.mktemp("bundles") / f"{family}-token-prm"
    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    export_bundle(checkpoint, bundle, parity, name=bundle.name, max_length=1024, output_options=options)
    return checkpoint, bundle


def math_shepherd_steps(checkpoint: Path, question: str, output: str) -> np.ndarray:
    """Math-Shepherd's model card, on a causal LM: p(+) over {+, -} wherever the ids are the step tag."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    candidates = [tokenizer.encode(t, add_special_tokens=False)[0] for t in ("+", "-")]
    (tag,) = tokenizer.encode(STEP_TAG, add_special_tokens=False)
    ids = torch.tensor([tokenizer.encode(question + " " + output)])
    with torch.inference_mode():
        scores = model(ids).logits[:, :, candidates].softmax(dim=-1)[:, :, 0]
    return scores[ids == tag].numpy()


def test_a_causal_lms_step_token_probabilities_serve_as_math_shepherds_card_computes_them(token_prm, heldout_pairs):
    checkpoint, bundle = token_prm
    examples = [e for e in heldout_pairs if len(e.prompt) + len(e.responses[0]) < 1500][:8]
    steps = [[s for s in re.split(r"(?<=[.!?])\s+", e.responses[0].strip()) if s][:6] for e in examples]
    items = [{"prompt": e.prompt + " ", "steps": s} for e, s in zip(examples, steps, strict=True)]
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
        answer = httpx.post(f"{server.url}/score", json={"items": items}, timeout=120).json()
    every_step = []
    for e, s, served in zip(examples, steps, answer["steps"], strict=True):
        expected = math_shepherd_steps(checkpoint, e.prompt, "".join(step + STEP_TAG for step in s))
        assert len(served) == len(s) == len(expected)
        assert np.abs(np.array([step["reward"] for step in served]) - expected).max() <= TOLERANCE
        every_step += list(expected)
    assert len(every_step) > 2 * len(examples) and np.std(every_step) > 100 * TOLERANCE
    rewards = np.array([float(np.min([step["reward"] for step in served])) for served in answer["steps"]])
    assert np.abs(np.array(answer["rewards"]) - rewards).max() <= 1e-6  # the scalar: the steps' min
    manifest = load_bundle(bundle)
    assert manifest.outputs.steps.class_token_ids is not None and manifest.input_format.layout == "pair"
    assert manifest.reference is not None and manifest.reference.by_output["step_rewards"] <= TOLERANCE


def test_step_tokens_that_are_not_one_token_are_refused_naming_them(judge_lm, tmp_path, heldout_pairs):
    _, checkpoint = judge_lm
    options = OutputOptions(step_separator=STEP_TAG, step_tokens=["+", " Absolutely wrong"])
    with pytest.raises(ValueError, match=r"--step-tokens ' Absolutely wrong' is \d+ tokens"):
        export_judge_options(checkpoint, tmp_path / "bundle", heldout_pairs, options)


def export_judge_options(checkpoint: Path, out: Path, heldout_pairs, options: OutputOptions) -> None:
    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    export_bundle(checkpoint, out, parity, name=out.name, max_length=1024, output_options=options)


# ---------------------------------------------------------------- export: what it refuses, what it records


def test_inspect_shows_the_template_the_verdict_tokens_and_the_rule(judge):
    _, bundle, spec = judge
    shown = subprocess.run(
        [sys.executable, "-m", "rewardserve.cli", "inspect", str(bundle)], capture_output=True, text=True, check=True
    ).stdout
    manifest = load_bundle(bundle)
    verdict = manifest.outputs.verdict
    assert verdict is not None and verdict.rule == spec["rule"] and verdict.labels == list(spec["verdicts"])
    assert f"judge ({spec['rule']})" in shown and repr(spec["answer_prefix"]) in shown
    for label, token_id in zip(verdict.labels, verdict.token_ids, strict=True):
        assert f"{label} = {spec['verdicts'][label]!r} (id {token_id})" in shown


def test_a_verdict_that_is_not_one_token_where_it_is_read_is_refused_naming_it(judge_lm, tmp_path, heldout_pairs):
    _, checkpoint = judge_lm
    split = {**RATING, "verdicts": {"1": " 1", "5": " 5", "10": " Absolutely"}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"verdict '10' \(' Absolutely'\) is not one token"):
        export_judge(checkpoint, tmp_path / "bundle", str(tmp_path / "split.json"), heldout_pairs)
    assert not (tmp_path / "bundle").exists()


def test_a_judge_file_whose_rubric_does_not_read_what_its_rule_reads_is_refused():
    with pytest.raises(ValueError, match=r"pairwise judge's rubric has \{response_a\} and \{response_b\}"):
        JudgeFile.model_validate({**RATING, "rule": "pairwise", "verdicts": {"A": "A", "B": "B"}})
    with pytest.raises(ValueError, match=r"\{response_a\} and \{response_b\} once each"):
        JudgeTemplate(rubric="{prompt} {response_a} {response_a} {response_b}")


def test_a_rubric_without_a_response_slot_is_refused_naming_it(judge_lm, tmp_path, heldout_pairs):
    _, checkpoint = judge_lm
    (tmp_path / "blind.json").write_text(json.dumps({**RATING, "rubric": "Grade this: {prompt}"}))
    with pytest.raises(ValueError, match=r"rubric: needs the slot \{response\}"):
        export_judge(checkpoint, tmp_path / "bundle", str(tmp_path / "blind.json"), heldout_pairs)


def test_the_export_command_names_the_refused_verdict_and_exits_2(judge_lm, tmp_path):
    _, checkpoint = judge_lm
    (tmp_path / "split.json").write_text(
        json.dumps({**RATING, "rule": "yes_no", "verdicts": {"yes": " Indubitably", "no": "No"}})
    )
    done = subprocess.run(
        [sys.executable, "-m", "rewardserve.cli", "export", str(checkpoint), "--out", str(tmp_path / "b")]
        + ["--judge", str(tmp_path / "split.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "verdict 'yes' (' Indubitably')" in done.stderr


# ---------------------------------------------------------------- the rules, on their own


def test_the_yes_no_rule_is_the_log_odds_of_the_whole_vocabularys_softmax_and_ignores_its_normaliser():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(5, 50))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    verdict = Verdict(rule="yes_no", labels=["yes", "no"], tokens=["Yes", "No"], token_ids=[7, 9])
    from_logits, p = verdict.read(logits[:, [7, 9]])
    from_log_p, _ = verdict.read(log_p[:, [7, 9]])
    assert np.allclose(from_logits, log_p[:, 7] - log_p[:, 9], atol=1e-5)
    assert np.allclose(from_log_p, from_logits, atol=1e-5)
    assert np.allclose(p[:, 0], np.exp(log_p[:, 7]) / (np.exp(log_p[:, 7]) + np.exp(log_p[:, 9])), atol=1e-6)


def test_the_rating_rule_is_the_expected_score_renormalised_over_the_scores():
    verdict = Verdict(
        rule="rating", labels=["1", "2", "3"], tokens=["1", "2", "3"], token_ids=[1, 2, 3], values=[1, 2, 3]
    )
    rewards, p = verdict.read(np.log(np.array([[0.1, 0.1, 0.3], [0.5, 0.0001, 0.0001]])))
    assert np.allclose(p[0], [0.2, 0.2, 0.6]) and abs(rewards[0] - 2.4) < 1e-6
    assert abs(rewards[1] - 1.0) < 1e-3


def test_a_verdict_file_must_say_what_its_rule_needs():
    with pytest.raises(ValueError, match="two tokens"):
        Verdict(rule="yes_no", labels=["a", "b", "c"], tokens=["a", "b", "c"], token_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="same token"):
        Verdict(rule="yes_no", labels=["a", "b"], tokens=["a", "b"], token_ids=[1, 1])
    with pytest.raises(ValueError, match="at most once"):
        JudgeTemplate(rubric="{prompt} {prompt} {response}")


def test_the_pairwise_rule_averages_both_orders_so_the_two_preferences_sum_to_one():
    rng = np.random.default_rng(1)
    forward, swapped = rng.normal(0, 2, 100), rng.normal(0, 2, 100)  # log-odds of A for (a, b) and for (b, a)
    p_a = pairwise.preference(forward, swapped)
    assert np.allclose(p_a + pairwise.preference(swapped, forward), 1)
    assert np.allclose(p_a, (1 / (1 + np.exp(-forward)) + 1 / (1 + np.exp(swapped))) / 2)
    # a judge that always says A, whatever the order, has no preference once both orders are read
    assert np.allclose(pairwise.preference(np.full(3, 5.0), np.full(3, 5.0)), 0.5)


def test_bradley_terry_scores_of_k_responses_recover_scores_that_made_the_preferences():
    scores = np.array([1.5, -0.5, 0.25, -1.25])  # centred
    matrix = 1 / (1 + np.exp(scores[None, :] - scores[:, None]))
    assert np.allclose(pairwise.bradley_terry(matrix), scores)
    rewards = [np.log(matrix[i, j] / matrix[j, i]) for i, j in pairwise.ordered_pairs(4)]  # a judge with no bias
    assert np.allclose(pairwise.preference_matrix(4, np.array(rewards)), matrix)
