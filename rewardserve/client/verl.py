"""verl's custom reward function, scoring on a rewardserve server:

    custom_reward_function.path=/path/to/site-packages/rewardserve/client/verl.py
    custom_reward_function.name=compute_score          # reward_model.reward_manager=naive
    custom_reward_function.name=compute_score_batch    # reward_model.reward_manager=batch (one request a batch)
    +custom_reward_function.reward_kwargs.url=http://reward:8000

The server URL and key come from `reward_kwargs` (url, api_key) or the environment
(REWARDSERVE_URL, REWARDSERVE_API_KEY). A reward model scores a response to its prompt, and
verl passes only the response: put the prompt in each row's `extra_info["prompt"]` (text, or
chat messages rendered with the bundle's template); without it the response is scored alone.
`ground_truth` is not used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rewardserve.client.http import RewardClient, chat_item


@functools.cache
def _client(url: str, api_key: str | None) -> RewardClient:
    # One pooled client per process and server, reused by every call.
    return RewardClient(url, api_key=api_key)


def _connect(url: str | None, api_key: str | None) -> RewardClient:
    url = url or os.environ.get("REWARDSERVE_URL")
    if not url:
        raise ValueError("no rewardserve URL: pass reward_kwargs.url or set REWARDSERVE_URL")
    return _client(url, api_key or os.environ.get("REWARDSERVE_API_KEY"))


def score_item(solution_str: str, extra_info: Mapping[str, Any] | None) -> dict[str, Any]:
    prompt = (extra_info or {}).get("prompt", "")
    if isinstance(prompt, str):
        return {"prompt": prompt, "response": solution_str}
    return chat_item([*prompt, {"role": "assistant", "content": solution_str}])


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    **_: Any,
) -> float:
    """The reward of one response (verl's naive reward manager calls this per sample)."""
    (reward,) = _connect(url, api_key).score_items([score_item(solution_str, extra_info)])
    return reward


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    **_: Any,
) -> list[float]:
    """Rewards of a batch of responses, in one chunked call (verl's batch reward manager)."""
    infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    items = [score_item(s, info) for s, info in zip(solution_strs, infos, strict=True)]
    return _connect(url, api_key).score_items(items)
