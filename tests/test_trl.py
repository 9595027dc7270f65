"""TRL: a real GRPOTrainer trains a tiny policy for a few steps on CPU, its rewards coming from a
live rewardserve server through `RewardFunction`, with plain-text and conversational prompts."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from datasets import Dataset
from live import free_port, running
from trl import GRPOConfig, GRPOTrainer

from rewardserve.client import RewardClient
from rewardserve.client.trl import RewardFunction
from rewardserve.service import Settings

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


class Recorded(RewardFunction):
    """Keeps what TRL passed and what the server answered, step by step."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[tuple[list, list, list[float]]] = []

    def __call__(self, prompts, completions, **kwargs):
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


def train(policy: Path, tmp_path: Path, reward: RewardFunction, prompts: list) -> GRPOTrainer:
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
    reward = Recorded(server.url)
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
    reward = Recorded(server.url)
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
