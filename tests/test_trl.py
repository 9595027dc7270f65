"""TRL: a real GRPOTrainer trains a tiny policy for a few steps on CPU, its rewards coming from a
live rewardserve server through `RewardFunction`, with plain-text and conversational prompts;
and from a pairwise judge through `GroupComparisonReward`, each GRPO group compared at once."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
from datasets import Dataset
from live import free_port, running
from trl import GRPOConfig, GRPOTrainer

from rewardserve.client import RewardClient
from rewardserve.client.trl import GroupComparisonReward, RewardFunction
from rewardserve.export.onnx_export import export_bundle
from rewardserve.export.source import OutputOptions
from rewardserve.service import Settings
from rewardserve.testing.chat_models import build_judge_lm

QUESTIONS = ["What is the capital of France?", "How do I bake bread?", "Tell me a joke.", "Is the sea salty?"]
# The tiny policy's chat template; the reward server renders with its own bundle's template.
POLICY_TEMPLATE = (
    "{% for m in messages %}{{ m.role + ': ' + m.content + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


@pytest.fixture(scope="module")
def server(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0)) as server:
        yield server


class Recorded:
    """A reward function that keeps what TRL passed and what the server answered, step by step."""

    def __init__(self, reward: RewardFunction | GroupComparisonReward) -> None:
        self.reward = reward
        self.__name__ = reward.__name__
        self.calls: list[tuple[list, list, list[float]]] = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = self.reward(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


@pytest.fixture(scope="module")
def pairwise_judge_server(tmp_path_factory, judge_texts, heldout_pairs):
    """A tiny Qwen3-style LM exported as the pairwise judge preset, served."""
    checkpoint = build_judge_lm("qwen3", tmp_path_factory.mktemp("pairwise-lm"), judge_texts)
    bundle = tmp_path_factory.mktemp("bundles") / "pairwise"
    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    export_bundle(checkpoint, bundle, parity, name="judge", output_options=OutputOptions(judge="pairwise"))
    with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
        yield server


def train(policy: Path, tmp_path: Path, reward, prompts: list) -> GRPOTrainer:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy, padding_side="left")
    tokenizer.chat_template = POLICY_TEMPLATE
    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    dataset = Dataset.from_dict({"prompt": prompts})
    trainer = GRPOTrainer(
        model=str(policy), reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    return trainer


def logged_reward_means(trainer: GRPOTrainer) -> list[float]:
    return [
        entry["rewards/rewardserve/mean"] for entry in trainer.state.log_history if "rewards/rewardserve/mean" in entry
    ]


def test_grpo_trains_on_plain_text_prompts_with_server_rewards(server, tiny_policy, tmp_path):
    prompts = [f"\n\nHuman: {q}\n\nAssistant:" for q in QUESTIONS]
    before = server.metric("rewardserve_sequences_total", endpoint="/score", status="200")
    reward = Recorded(RewardFunction(server.url))
    trainer = train(tiny_policy, tmp_path, reward, prompts)
    assert len(reward.calls) == 2  # one generation batch per step: 2 prompts x 2 completions
    assert server.metric("rewardserve_sequences_total", endpoint="/score", status="200") - before == 8
    with RewardClient(server.url) as client:
        for sent_prompts, completions, rewards in reward.calls:
            assert all(isinstance(c, str) for c in completions)
            assert rewards == pytest.approx(client.score(sent_prompts, completions), abs=1e-6)
    expected = [sum(rewards) / len(rewards) for _, _, rewards in reward.calls]
    assert logged_reward_means(trainer) == pytest.approx(expected, abs=1e-5)


def test_grpo_trains_on_conversational_prompts(server, tiny_policy, tmp_path):
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    reward = Recorded(RewardFunction(server.url))
    trainer = train(tiny_policy, tmp_path, reward, prompts)
    assert len(reward.calls) == 2
    with RewardClient(server.url) as client:
        for sent_prompts, completions, rewards in reward.calls:
            assert all(c[-1]["role"] == "assistant" for c in completions)
            # the tiny bundle's template renders a user turn as an HH transcript
            texts = [f"\n\nHuman: {p[0]['content']}" for p in sent_prompts]
            assert rewards == pytest.approx(client.score(texts, [c[-1]["content"] for c in completions]), abs=1e-6)
    assert len(logged_reward_means(trainer)) == 2


def test_the_reward_function_pickles_without_its_connection(server):
    reward = RewardFunction(server.url, name="rm")
    prompts, completions = ["\n\nHuman: Hi"], [" Hello!"]
    first = reward(prompts, completions, trainer_state=None, extra_column=["x"])
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.__name__ == "rm"
    assert copy(prompts, completions) == pytest.approx(first)


def test_grpo_trains_on_a_pairwise_judges_comparison_of_each_group(pairwise_judge_server, tiny_policy, tmp_path):
    server = pairwise_judge_server
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    reward = Recorded(GroupComparisonReward(server.url))
    trainer = train(tiny_policy, tmp_path, reward, prompts)
    assert len(reward.calls) == 2  # one generation batch per step: 2 prompts x 2 completions
    with RewardClient(server.url) as client:
        for sent_prompts, completions, rewards in reward.calls:
            for g in range(0, 4, 2):  # TRL sends each prompt's num_generations completions in a row
                assert sent_prompts[g] == sent_prompts[g + 1]
                texts = [c[-1]["content"] for c in completions[g : g + 2]]
                ranked = client.rank(sent_prompts[g], texts)
                assert rewards[g : g + 2] == pytest.approx(ranked.rewards, abs=1e-6)
                # two completions: +-logit(p)/2 of the judge's own preference, read in both orders
                p = ranked.p_better[0][1]
                assert rewards[g] == pytest.approx(0.5 * math.log(p / (1 - p)), abs=1e-5)
                assert rewards[g] + rewards[g + 1] == pytest.approx(0, abs=1e-6)
    assert len(logged_reward_means(trainer)) == 2
    assert server.metric("rewardserve_sequences_total", endpoint="/score", status="200") == 0
