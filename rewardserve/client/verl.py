"""verl's custom reward function, scoring on a rewardserve server:

    custom_reward_function.path=/path/to/site-packages/rewardserve/client/verl.py
    custom_reward_function.name=compute_score          # reward_model.reward_manager=naive
    custom_reward_function.name=compute_score_batch    # reward_model.reward_manager=batch (one request a batch)
    custom_reward_function.name=compute_score_async    # verl >= 0.7's reward loop, which awaits coroutine functions
    +custom_reward_function.reward_kwargs.url=http://reward:8000

The server URL and key come from `reward_kwargs` (url, api_key) or the environment
(REWARDSERVE_URL, REWARDSERVE_API_KEY). A reward model scores a response to its prompt, and
verl passes only the response: put the prompt in each row's `extra_info["prompt"]` (text, or
chat messages rendered with the bundle's template); without it the response is scored alone.
`ground_truth` is not used.

With `+custom_reward_function.reward_kwargs.details=true` each result is a dict, `{"score":
reward, ...}` with a multi-objective model's objectives and a process reward model's
`step_reward_mean`, `step_reward_min` and `steps`: verl's reward managers take "score" as the
reward and log the other keys per sample (reward_extra_info).
"""

from __future__ import annotations

import asyncio
import functools
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from rewardserve.client.http import AsyncRewardClient, DetailedScores, RewardClient, chat_item


@functools.cache
def _client(url: str, api_key: str | None) -> RewardClient:
    # One pooled client per process and server, reused by every call.
    return RewardClient(url, api_key=api_key)


# An async client belongs to the event loop it was made on: one pool per loop and server.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, AsyncRewardClient]] = (
    weakref.WeakKeyDictionary()
)


def _server(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    url = url or os.environ.get("REWARDSERVE_URL")
    if not url:
        raise ValueError("no rewardserve URL: pass reward_kwargs.url or set REWARDSERVE_URL")
    return url, api_key or os.environ.get("REWARDSERVE_API_KEY")


def _connect(url: str | None, api_key: str | None) -> RewardClient:
    return _client(*_server(url, api_key))


# Samples of one verl step awaited at once; the server batches them across requests.
ASYNC_REQUESTS_IN_FLIGHT = 64


def connect_async(url: str | None, api_key: str | None) -> AsyncRewardClient:
    server = _server(url, api_key)
    clients = _async_clients.setdefault(asyncio.get_running_loop(), {})
    if server not in clients:
        url, api_key = server
        clients[server] = AsyncRewardClient(url, api_key=api_key, concurrency=ASYNC_REQUESTS_IN_FLIGHT)
    return clients[server]


def score_item(solution_str: str, extra_info: Mapping[str, Any] | None, ground_truth: Any = None) -> dict[str, Any]:
    """The `/score` item of a sample, its ground truth as the label (a composed reward's rules
    read it; a reward model ignores it)."""
    prompt = (extra_info or {}).get("prompt", "")
    if isinstance(prompt, str):
        item = {"prompt": prompt, "response": solution_str}
    else:
        item = chat_item([*prompt, {"role": "assistant", "content": solution_str}])
    if ground_truth is not None:
        item["label"] = ground_truth.tolist() if hasattr(ground_truth, "tolist") else ground_truth
    return item


def scored_results(scored: DetailedScores) -> list[dict[str, float]]:
    """Each sample's reward as verl's "score", beside the model's objectives and step statistics,
    or a composed reward's components."""
    results = [{"score": reward} for reward in scored.rewards]
    for name, values in {**(scored.objectives or {}), **(scored.components or {})}.items():
        for result, value in zip(results, values, strict=True):
            result[name] = value
    for result, steps in zip(results, scored.steps or (), strict=False):
        rewards = [step.reward for step in steps]
        result.update(step_reward_mean=sum(rewards) / len(rewards), step_reward_min=min(rewards), steps=len(rewards))
    return results


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    details: bool = False,
    **_: Any,
) -> float | dict[str, float]:
    """The reward of one response (verl's naive reward manager calls this per sample)."""
    items = [score_item(solution_str, extra_info, ground_truth)]
    if details:
        return scored_results(_connect(url, api_key).score_detailed(items))[0]
    (reward,) = _connect(url, api_key).score_items(items)
    return reward


async def compute_score_async(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    details: bool = False,
    **_: Any,
) -> float | dict[str, float]:
    """The reward of one response, awaited: verl's reward loop (>= 0.7) awaits a coroutine
    function instead of running it on a thread, so many samples are in flight at once, one
    request each, and the server batches them."""
    items = [score_item(solution_str, extra_info, ground_truth)]
    if details:
        return scored_results(await connect_async(url, api_key).score_detailed(items))[0]
    (reward,) = await connect_async(url, api_key).score_items(items)
    return reward


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    details: bool = False,
    **_: Any,
) -> list[float] | list[dict[str, float]]:
    """Rewards of a batch of responses, in one chunked call (verl's batch reward manager)."""
    infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    pairs = zip(solution_strs, infos, ground_truths, strict=True)
    items = [score_item(s, info, truth) for s, info, truth in pairs]
    if details:
        return scored_results(_connect(url, api_key).score_detailed(items))
    return _connect(url, api_key).score_items(items)
