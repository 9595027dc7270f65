"""Rewards beyond one scalar, served as their models' authors compute them: a multi-objective chat
RM (an N-label head), a gated one shaped like ArmoRM (its own modeling code), and a process
reward model (a token classifier read at `<extra_0>`, Qwen2.5-Math-PRM's usage), each built
from a config, exported, served over HTTP and compared output by output with transformers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from live import free_port, running
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from rewardserve.bundle import load_bundle
from rewardserve.client.http import AsyncRewardClient, RewardClient
from rewardserve.client.trl import RewardFunction
from rewardserve.data.hh import prompt_turns
from rewardserve.export.source import OutputOptions
from rewardserve.service import Settings
from rewardserve.testing.chat_models import (
    LABEL_WEIGHTS as WEIGHTS,
)
from rewardserve.testing.chat_models import (
    LABELS,
    OBJECTIVES,
    STEP_SEPARATOR,
    build_chat_rm,
    build_gated_rm,
    build_prm,
    export_chat_rm,
    policy_text,
)

TOLERANCE = 1e-4
CONVERSATIONS = 16


@pytest.fixture(scope="module")
def conversations(heldout_pairs) -> list[tuple[list[dict], str]]:
    """(conversation so far, response) of held-out HH examples short enough for the tiny models."""
    examples = [e for e in heldout_pairs if len(e.prompt) + len(e.responses[0]) < 1500][:CONVERSATIONS]
    return [(prompt_turns(e.prompt), e.responses[0]) for e in examples]


@pytest.fixture(scope="module")
def gated_rm(tmp_path_factory, chat_texts, heldout_pairs) -> tuple[Path, Path]:
    checkpoint = build_gated_rm(tmp_path_factory.mktemp("gated"), chat_texts)
    options = OutputOptions(trust_remote_code=True)
    return checkpoint, export_chat_rm(checkpoint, tmp_path_factory.mktemp("bundles") / "gated", heldout_pairs, options)


def serve(bundle: Path):
    return running(Settings(bundle=bundle, port=free_port(), cache_size=0))


def steps_of(response: str) -> list[str]:
    """A response's sentences, as reasoning steps."""
    return [s.strip() + "." for s in response.split(".") if s.strip()][:6] or [response]


# ---------------------------------------------------------------- the model cards' computations


def card_objectives(checkpoint: Path, conversations) -> tuple[np.ndarray, np.ndarray]:
    """(reward, objectives) of each conversation: model(**apply_chat_template(...)).logits[0]."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        logits = np.stack(
            [model(**_chat(tokenizer, prompt, response)).logits[0].numpy() for prompt, response in conversations]
        )
    return logits @ np.array(WEIGHTS, np.float32), logits


def card_gated(checkpoint: Path, conversations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ArmoRM's model card: output.score, output.rewards, output.gating_output of its own class."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    scores, objectives, gating = [], [], []
    with torch.inference_mode():
        for prompt, response in conversations:
            output = model(**_chat(tokenizer, prompt, response))
            scores.append(float(output.score[0]))
            objectives.append(output.rewards[0].numpy())
            gating.append(output.gating_output[0].numpy())
    return np.array(scores), np.stack(objectives), np.stack(gating)


def card_steps(checkpoint: Path, conversations) -> list[np.ndarray]:
    """Qwen2.5-Math-PRM's model card: the steps joined by <extra_0> (one after the last), the
    conversation rendered to text and encoded, softmax(logits)[:, 1] at every <extra_0>."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForTokenClassification.from_pretrained(checkpoint).eval()
    separator_id = tokenizer.encode(STEP_SEPARATOR)[0]
    rewards = []
    with torch.inference_mode():
        for prompt, response in conversations:
            messages = [
                *prompt,
                {"role": "assistant", "content": STEP_SEPARATOR.join(steps_of(response)) + STEP_SEPARATOR},
            ]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
            input_ids = tokenizer.encode(text, return_tensors="pt")
            probabilities = torch.softmax(model(input_ids=input_ids).logits, dim=-1)
            rewards.append(probabilities[0][input_ids[0] == separator_id][:, 1].numpy())
    return rewards


def _chat(tokenizer, prompt: list[dict], response: str) -> dict:
    conversation = [*prompt, {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)


def messages_items(conversations) -> list[dict]:
    return [{"messages": [*prompt, {"role": "assistant", "content": response}]} for prompt, response in conversations]


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60)


# ---------------------------------------------------------------- export


def test_each_bundle_declares_its_outputs_and_export_checked_every_one_against_transformers(
    objective_rm, gated_rm, prm
):
    objectives, gated, steps = (load_bundle(bundle) for _, bundle in (objective_rm, gated_rm, prm))
    assert objectives.outputs.objectives.names == LABELS and objectives.outputs.objectives.weights == WEIGHTS
    assert gated.outputs.objectives.names == OBJECTIVES and gated.outputs.objectives.scalar == "gating"
    assert steps.outputs.steps.separator == STEP_SEPARATOR and steps.outputs.steps.scalar == "min"
    for manifest, outputs in ((objectives, {"reward", "objectives"}), (gated, {"reward", "objectives", "gating"})):
        assert set(manifest.reference.by_output) == outputs and set(manifest.parity.by_output) == outputs
    assert set(steps.reference.by_output) == {"reward", "step_rewards"}
    # The Qwen3-style heads are written from the weights with fused attention; ArmoRM's is traced.
    assert objectives.graph.builder == steps.graph.builder == "decoder"
    assert objectives.graph.fused_operators["GroupQueryAttention"] == 2
    assert gated.graph.builder is None and "gated head" in gated.graph.fallback
    for manifest in (objectives, gated, steps):
        assert manifest.reference.max_abs_diff <= TOLERANCE and manifest.parity.max_abs_diff <= TOLERANCE
        assert manifest.reference.conversations >= 64


# ---------------------------------------------------------------- served, against the model cards


def test_a_multi_objective_rm_serves_each_objective_and_the_weighted_reward(objective_rm, conversations):
    checkpoint, bundle = objective_rm
    rewards, objectives = card_objectives(checkpoint, conversations)
    with serve(bundle) as server:
        answer = post(server.url, "/score", {"items": messages_items(conversations)}).json()
    assert np.abs(np.array(answer["rewards"]) - rewards).max() <= TOLERANCE
    assert list(answer["objectives"]) == LABELS
    served = np.array([answer["objectives"][name] for name in LABELS]).T
    assert np.abs(served - objectives).max() <= TOLERANCE
    assert "steps" not in answer and "objective_weights" not in answer


def test_a_gated_rm_serves_its_score_objectives_and_gating_weights(gated_rm, conversations):
    checkpoint, bundle = gated_rm
    scores, objectives, gating = card_gated(checkpoint, conversations)
    with serve(bundle) as server:
        answer = post(server.url, "/score", {"items": messages_items(conversations)}).json()
    assert np.abs(np.array(answer["rewards"]) - scores).max() <= TOLERANCE
    assert np.abs(np.array([answer["objectives"][n] for n in OBJECTIVES]).T - objectives).max() <= TOLERANCE
    assert np.abs(np.array([answer["objective_weights"][n] for n in OBJECTIVES]).T - gating).max() <= TOLERANCE
    assert np.allclose(np.array(list(answer["objective_weights"].values())).sum(0), 1.0, atol=1e-5)


def test_a_prm_serves_each_steps_reward_at_its_separator_with_the_steps_span(prm, conversations):
    checkpoint, bundle = prm
    expected = card_steps(checkpoint, conversations)
    items = [{"messages": prompt, "steps": steps_of(response)} for prompt, response in conversations]
    with serve(bundle) as server:
        answer = post(server.url, "/score", {"items": items}).json()
        # The same responses with the separators already in them: the same step rewards.
        written = [
            {"messages": [*prompt, {"role": "assistant", "content": STEP_SEPARATOR.join(steps_of(r)) + STEP_SEPARATOR}]}
            for prompt, r in conversations
        ]
        again = post(server.url, "/score", {"items": written}).json()
    assert [len(steps) for steps in answer["steps"]] == [len(e) for e in expected]
    for served, reference in zip(answer["steps"], expected, strict=True):
        assert np.abs(np.array([step["reward"] for step in served]) - reference).max() <= TOLERANCE
    assert np.abs(np.array(answer["rewards"]) - [e.min() for e in expected]).max() <= TOLERANCE  # the min rule
    assert again["steps"] == answer["steps"]
    # Each span is that step's text in the response written from the steps.
    prompt, response = conversations[0]
    text = STEP_SEPARATOR.join(steps_of(response)) + STEP_SEPARATOR
    assert [text[slice(*step["span"])] for step in answer["steps"][0]] == steps_of(response)


def test_compare_stays_on_the_scalar_reward(objective_rm, conversations):
    _, bundle = objective_rm
    prompt, response = conversations[0]
    with serve(bundle) as server:
        scored = post(server.url, "/score", {"items": messages_items(conversations[:1])}).json()["rewards"][0]
        compared = post(server.url, "/compare", {"messages": prompt, "responses": [response, "No."]}).json()
    assert set(compared) == {"rewards", "ranking", "p_best", "p_better", "model"}
    assert compared["rewards"][0] == pytest.approx(scored, abs=1e-6)


def test_a_request_may_ask_for_some_objectives_only(objective_rm, conversations):
    _, bundle = objective_rm
    with serve(bundle) as server:
        some = post(server.url, "/score", {"items": messages_items(conversations[:2]), "objectives": ["verbosity"]})
        none = post(server.url, "/score", {"items": messages_items(conversations[:2]), "objectives": []})
    assert list(some.json()["objectives"]) == ["verbosity"]
    assert none.json()["objectives"] == {}


# ---------------------------------------------------------------- OpenRLHF, the clients, TRL


def test_get_reward_logs_objectives_and_step_rewards_in_extra_logs(objective_rm, prm, conversations):
    texts = [(p[-1]["content"], r) for p, r in conversations[:4]]
    with serve(objective_rm[1]) as server:
        logs = post(server.url, "/get_reward", {"query": [p + r for p, r in texts], "policy_format": "raw"}).json()
    assert set(logs["extra_logs"]) == set(LABELS) and all(len(v) == 4 for v in logs["extra_logs"].values())
    queries = [p + STEP_SEPARATOR.join(steps_of(r)) + STEP_SEPARATOR for p, r in texts]
    with serve(prm[1]) as server:
        answer = post(
            server.url, "/get_reward", {"query": queries, "prompts": [p for p, _ in texts], "policy_format": "raw"}
        )
        scored = post(server.url, "/score", {"items": [{"prompt": p, "steps": steps_of(r)} for p, r in texts]}).json()
    logs = answer.json()["extra_logs"]
    steps = [np.array([s["reward"] for s in item]) for item in scored["steps"]]
    assert logs["step_reward_mean"] == pytest.approx([s.mean() for s in steps], abs=1e-6)
    assert logs["step_reward_min"] == pytest.approx([s.min() for s in steps], abs=1e-6)
    assert logs["steps"] == [len(s) for s in steps]


def test_openrlhfs_own_client_gets_the_step_rewards_of_policy_text_in_extra_logs(prm, conversations):
    agent = pytest.importorskip("openrlhf.utils.agent", reason="make install adds openrlhf (without its dependencies)")
    checkpoint, bundle = prm
    expected = card_steps(checkpoint, conversations[:4])
    stepped = [(p, STEP_SEPARATOR.join(steps_of(r)) + STEP_SEPARATOR) for p, r in conversations[:4]]
    texts = [policy_text("chatml", p, r) for p, r in stepped]  # what a ChatML policy decodes
    with serve(bundle) as server:
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{server.url}/get_reward")
        (answer,) = asyncio.run(
            executor._fetch_rewards_via_http([q for _, q in texts], [p for p, _ in texts], [None] * 4)
        )
    assert answer["extra_logs"]["step_reward_min"] == pytest.approx([e.min() for e in expected], abs=TOLERANCE)
    assert answer["extra_logs"]["step_reward_mean"] == pytest.approx([e.mean() for e in expected], abs=TOLERANCE)
    assert answer["rewards"] == pytest.approx([e.min() for e in expected], abs=TOLERANCE)


def test_vllms_classify_answers_every_objective_in_manifest_order_and_slime_gets_them_by_name(
    objective_rm, conversations
):
    checkpoint, bundle = objective_rm
    rewards, objectives = card_objectives(checkpoint, conversations[:3])
    items = messages_items(conversations[:3])
    with serve(bundle) as server:
        raw = [post(server.url, "/classify", {**item, "use_activation": False}).json()["data"][0] for item in items]
        activated = post(server.url, "/v1/classify", items[0]).json()["data"][0]
        pooled = post(server.url, "/pooling", items[0]).json()["data"][0]["data"]
        prompt, response = conversations[0]
        slime = post(server.url, "/slime/details", {"prompt": prompt, "response": response}).json()
    np.testing.assert_allclose([d["probs"] for d in raw], objectives, atol=TOLERANCE)
    assert {d["num_classes"] for d in raw} == {len(LABELS)}
    assert raw[0]["label"] == LABELS[int(np.argmax(objectives[0]))]
    softmax = np.exp(objectives[0]) / np.exp(objectives[0]).sum()  # vLLM's activation for several labels
    np.testing.assert_allclose(activated["probs"], softmax, atol=TOLERANCE)
    np.testing.assert_allclose(pooled, objectives[0], atol=TOLERANCE)
    assert slime["reward"] == pytest.approx(rewards[0], abs=TOLERANCE)
    assert [slime[name] for name in LABELS] == pytest.approx(objectives[0].tolist(), abs=TOLERANCE)


def test_the_clients_return_objectives_and_steps(objective_rm, prm, conversations):
    items = messages_items(conversations[:3])
    with serve(objective_rm[1]) as server, RewardClient(server.url) as client:
        detailed = client.score_detailed(items)
        plain = client.score_items(items)
    assert detailed.rewards == plain and list(detailed.objectives) == LABELS
    steps_items = [{"messages": p, "steps": steps_of(r)} for p, r in conversations[:3]]
    with serve(prm[1]) as server:
        detailed = asyncio.run(_async_detailed(server.url, steps_items))
    assert [len(s) for s in detailed.steps] == [len(steps_of(r)) for _, r in conversations[:3]]
    assert all(0 < step.reward < 1 for item in detailed.steps for step in item)


async def _async_detailed(url: str, items: list[dict]):
    async with AsyncRewardClient(url) as client:
        return await client.score_detailed(items)


def test_the_trl_reward_function_picks_one_objective_or_a_weighted_sum(objective_rm, conversations):
    prompts = [p for p, _ in conversations[:4]]
    completions = [[{"role": "assistant", "content": r}] for _, r in conversations[:4]]
    with serve(objective_rm[1]) as server:
        objectives = RewardClient(server.url).score_detailed(messages_items(conversations[:4])).objectives
        one = RewardFunction(server.url, objective="verbosity")(prompts, completions)
        mixed = RewardFunction(server.url, objectives={"helpfulness": 0.7, "harmlessness": 0.3})(prompts, completions)
        with pytest.raises(ValueError, match="unknown objective"):
            RewardFunction(server.url, objective="honesty")(prompts, completions)
    assert one == pytest.approx(objectives["verbosity"], abs=1e-6)
    expected = 0.7 * np.array(objectives["helpfulness"]) + 0.3 * np.array(objectives["harmlessness"])
    assert mixed == pytest.approx(expected.tolist(), abs=1e-6)


def test_verls_reward_function_returns_objectives_and_step_statistics_beside_the_score(objective_rm, prm):
    from rewardserve.client import verl

    info = {"prompt": [{"role": "user", "content": "How do I boil an egg?"}]}
    with serve(objective_rm[1]) as server:
        result = verl.compute_score("hh", "Boil it for 8 minutes.", None, info, url=server.url, details=True)
        plain = verl.compute_score("hh", "Boil it for 8 minutes.", None, info, url=server.url)
    assert set(result) == {"score", *LABELS} and result["score"] == pytest.approx(plain, abs=1e-6)
    with serve(prm[1]) as server:
        (result,) = verl.compute_score_batch(
            ["math"], ["Boil it.<extra_0>Wait.<extra_0>"], [None], [info], url=server.url, details=True
        )
    assert result["steps"] == 2 and result["score"] == pytest.approx(result["step_reward_min"], abs=1e-6)


# ---------------------------------------------------------------- limits and refusals


def test_steps_and_objectives_over_their_limits_are_413_naming_the_limit(objective_rm, prm):
    with running(Settings(bundle=prm[1], port=free_port(), max_steps_per_item=4)) as server:
        many = post(server.url, "/score", {"items": [{"prompt": "Add 1 and 1.", "steps": ["a"] * 5}]})
        written = post(server.url, "/score", {"items": [{"prompt": "p", "response": "a<extra_0>" * 5}]})
    assert many.status_code == 413 and many.json()["error_type"] == "too_many_steps"
    assert many.json()["error"].startswith("items[0].steps: 5 steps, at most 4") and "max_steps_per_item" in many.text
    assert written.status_code == 413 and written.json()["error"].startswith("items[0]: 5 steps")
    with running(Settings(bundle=objective_rm[1], port=free_port(), max_objectives_per_request=2)) as server:
        body = {"items": [{"prompt": "p", "response": "r"}], "objectives": LABELS}
        refused = post(server.url, "/score", body)
    assert refused.status_code == 413 and refused.json()["error_type"] == "too_many_objectives"
    assert "max_objectives_per_request" in refused.json()["error"]


def test_steps_a_model_cannot_read_are_422_naming_the_field(objective_rm, prm):
    with serve(prm[1]) as server:
        no_step = post(server.url, "/score", {"items": [{"prompt": "p", "response": "no separator here"}]})
        inside = post(server.url, "/score", {"items": [{"prompt": "p", "steps": ["ok", f"a{STEP_SEPARATOR}b"]}]})
        objectives = post(server.url, "/score", {"items": [{"prompt": "p", "steps": ["a"]}], "objectives": ["x"]})
    assert no_step.status_code == 422 and no_step.json()["error_type"] == "invalid_steps"
    assert no_step.json()["error"].startswith("items[0]: no step ends with")
    assert inside.status_code == 422 and inside.json()["error"].startswith(
        "items[0].steps[1]: holds the step separator"
    )
    assert objectives.status_code == 422 and objectives.json()["error"].startswith("objectives: this model has no")
    with serve(objective_rm[1]) as server:
        steps = post(server.url, "/score", {"items": [{"prompt": "p", "steps": ["a"]}]})
        unknown = post(server.url, "/score", {"items": [{"prompt": "p", "response": "r"}], "objectives": ["honesty"]})
    assert steps.status_code == 422 and steps.json()["error"].startswith("items[0].steps: this model gives no step")
    assert unknown.status_code == 422 and unknown.json()["error"].startswith("objectives[0]: 'honesty' is not one")


def test_a_scalar_bundle_answers_as_before(tiny_bundle):
    with serve(tiny_bundle) as server:
        answer = post(server.url, "/score", {"items": [{"prompt": "Hi", "response": "Hello"}]}).json()
        logs = post(server.url, "/get_reward", {"query": ["Hi Hello"], "policy_format": "raw"}).json()
        steps = post(server.url, "/score", {"items": [{"prompt": "p", "steps": ["a"]}]})
    assert set(answer) == {"rewards", "model"} and logs["extra_logs"] == {}
    assert steps.status_code == 422


def test_metrics_show_each_objective_and_the_step_counts(objective_rm, prm, conversations):
    with serve(objective_rm[1]) as server:
        post(server.url, "/score", {"items": messages_items(conversations[:3])})
        assert server.metric("rewardserve_objective_count", objective="verbosity") == 3
    with serve(prm[1]) as server:
        post(server.url, "/score", {"items": [{"prompt": "p", "steps": ["a", "b"]}, {"prompt": "q", "steps": ["c"]}]})
        assert server.metric("rewardserve_response_steps_bucket", le="1.0") == 1
        assert server.metric("rewardserve_response_steps_count") == 2
        assert server.metric("rewardserve_step_reward_count") == 3


# ---------------------------------------------------------------- what export refuses


def test_export_refuses_a_model_whose_outputs_it_cannot_name_or_combine(tmp_path, chat_texts, heldout_pairs):
    from rewardserve.export.onnx_export import export_bundle

    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    several = build_chat_rm("qwen3", tmp_path / "several", chat_texts, labels=LABELS)
    with pytest.raises(ValueError, match="--reward-objective NAME or --reward-weights"):
        export_bundle(several, tmp_path / "b1", parity, max_length=1024)
    with pytest.raises(ValueError, match="one per objective"):
        export_bundle(
            several, tmp_path / "b2", parity, max_length=1024, output_options=OutputOptions(reward_weights=[1.0])
        )
    gated = build_gated_rm(tmp_path / "gated", chat_texts)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        export_bundle(gated, tmp_path / "b3", parity, max_length=1024)
    prm_checkpoint = build_prm(tmp_path / "prm", chat_texts)
    with pytest.raises(ValueError, match="--step-separator"):
        export_bundle(prm_checkpoint, tmp_path / "b4", parity, max_length=1024)
    with pytest.raises(ValueError, match="--step-separator is for token-classification models"):
        options = OutputOptions(step_separator=STEP_SEPARATOR, reward_objective="helpfulness")
        export_bundle(several, tmp_path / "b5", parity, max_length=1024, output_options=options)


def test_in_process_scoring_reads_steps_items_as_the_server_does(prm, conversations):
    """`score` and `eval` with --bundle go through the core's own reading of an item
    (scoring/offline.py): a PRM's `steps` give the server's rewards, and what the server
    refuses is refused, naming the item."""
    from rewardserve.client.scorers import LocalScorer

    items = [{"messages": prompt, "steps": steps_of(response)} for prompt, response in conversations[:6]]
    with serve(prm[1]) as server:
        served = post(server.url, "/score", {"items": items}).json()["rewards"]
    local = LocalScorer(prm[1])
    assert np.abs(np.array(local.score_items(items)) - served).max() <= 1e-5
    with pytest.raises(ValueError, match=r"items\[1\].*response: not with steps"):
        local.score_items([items[0], {**items[1], "response": "x"}])
