"""verl: `compute_score` and `compute_score_batch` called as verl's naive and batch reward
managers call them (keywords, with `reward_kwargs` bound as verl binds them) on a live server."""

from __future__ import annotations

import asyncio
import functools
import inspect
from pathlib import Path

import pytest
from live import free_port, running

from rewardserve.client import RewardClient, RewardServerError, verl

PROMPT = "\n\nHuman: What is the capital of France?\n\nAssistant:"
SOLUTIONS = [" Paris.", " I like turtles.", " The capital is Paris."]


@pytest.fixture(scope="module")
def url(tiny_bundle):
    from rewardserve.service import Settings

    with running(Settings(bundle=tiny_bundle, port=free_port(), cache_size=0)) as server:
        yield server.url


@pytest.fixture(scope="module")
def expected(url) -> list[float]:
    with RewardClient(url) as client:
        return client.score([PROMPT] * 3, SOLUTIONS)


def test_the_naive_manager_scores_one_response_at_a_time(url, expected):
    compute_score = functools.partial(verl.compute_score, url=url)  # custom_reward_function.reward_kwargs
    rewards = [
        compute_score(data_source="hh", solution_str=s, ground_truth=None, extra_info={"prompt": PROMPT, "index": i})
        for i, s in enumerate(SOLUTIONS)
    ]
    assert all(isinstance(r, float) for r in rewards)
    assert rewards == pytest.approx(expected, abs=1e-6)


def test_the_reward_loop_awaits_the_async_function_for_many_samples_at_once(url, expected):
    # verl >= 0.7 binds reward_kwargs with a partial, awaits it when it is a coroutine function,
    # and passes its reward-model router arguments too
    compute_score = functools.partial(verl.compute_score_async, url=url)
    assert inspect.iscoroutinefunction(compute_score)

    async def step() -> list[float]:
        calls = [
            compute_score(
                data_source="hh",
                solution_str=s,
                ground_truth=None,
                extra_info={"prompt": PROMPT},
                reward_router_address=None,
                reward_model_tokenizer=None,
            )
            for s in SOLUTIONS * 4
        ]
        return await asyncio.gather(*calls)

    first, second = asyncio.run(step()), asyncio.run(step())  # a new event loop gets its own client
    # (batch-mates move fp32 rewards by ~1e-7)
    assert first == pytest.approx(expected * 4, abs=1e-6) and second == pytest.approx(first, abs=1e-6)


def test_the_batch_manager_scores_a_batch_in_one_call(url, expected):
    rewards = verl.compute_score_batch(
        data_sources=["hh"] * 3,
        solution_strs=SOLUTIONS,
        ground_truths=[None] * 3,
        extra_infos=[{"prompt": PROMPT}] * 3,
        url=url,
    )
    assert rewards == pytest.approx(expected, abs=1e-6)


def test_a_chat_prompt_in_extra_info_is_rendered_with_the_bundles_template(url, expected):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with RewardClient(url) as client:
        hh_text = client.score(["\n\nHuman: What is the capital of France?"], SOLUTIONS[:1])
    reward = verl.compute_score("hh", SOLUTIONS[0], None, {"prompt": messages}, url=url)
    assert reward == pytest.approx(hh_text[0], abs=1e-6)


def test_the_url_comes_from_the_environment_and_without_a_prompt_the_response_is_scored_alone(url, monkeypatch):
    monkeypatch.setenv("REWARDSERVE_URL", url)
    with RewardClient(url) as client:
        alone = client.score([""], SOLUTIONS[:1])
    assert verl.compute_score("hh", SOLUTIONS[0], "Paris") == pytest.approx(alone[0], abs=1e-6)


def test_no_url_is_a_clear_error_and_server_errors_are_raised(url, monkeypatch):
    monkeypatch.delenv("REWARDSERVE_URL", raising=False)
    with pytest.raises(ValueError, match="REWARDSERVE_URL"):
        verl.compute_score("hh", "x", None)
    messages = [{"role": "user", "content": "x" * 200_000}]
    with pytest.raises(RewardServerError, match="413 text_too_long"):
        verl.compute_score("hh", "x", None, {"prompt": messages}, url=url)


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue, as the sky is."},
    ],
]


@pytest.fixture(scope="module")
def policy(tmp_path_factory, train_pairs) -> Path:
    """A Qwen3-style policy's tokenizer: what verl decodes the rollouts with."""
    from rewardserve.testing.chat_models import chat_tokenizer

    out = tmp_path_factory.mktemp("policy")
    chat_tokenizer("qwen3", out, [e.prompt + r for e in train_pairs[:200] for r in e.responses])
    return out


def test_verls_own_reward_loop_loads_the_manager_and_gets_the_conversations_rewards(url, policy):
    import verl_loop
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    with RewardClient(url) as client:
        expected = client.score_chats(CONVERSATIONS)
    results = verl_loop.scores(verl_loop.config(policy, url=url), tokenizer, CONVERSATIONS * 3)
    assert [r["reward_score"] for r in results] == pytest.approx(expected * 3, abs=1e-6)
    assert results[0]["reward_extra_info"] == {"score": results[0]["reward_score"]}


def test_the_manager_says_what_is_missing_without_raw_prompt(url, policy):
    import verl_loop
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    data = verl_loop.sample(tokenizer, CONVERSATIONS[0])
    data.non_tensor_batch.pop("raw_prompt")

    async def score() -> dict:
        return await verl_loop.RewardLoopWorker(verl_loop.config(policy, url=url)).compute_score(data)

    with pytest.raises(ValueError, match="no raw_prompt: keep data.return_raw_chat=True"):
        asyncio.run(score())
