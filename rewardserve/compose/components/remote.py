"""Another reward server as a component, over HTTP: rewardserve's `/score` (one request for the
sequences, labels passed on), or anything that answers vLLM's `/classify` (texts in one request,
each conversation in its own, `use_activation: false` for the raw reward, read as the last of
`probs`). A refused connection, an error status or a malformed answer is the component's failure
(502 naming it, or its fallback); its timeout is the spec's."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import numpy as np

from rewardserve.compose.components.base import Component, Item
from rewardserve.compose.spec import RemoteComponent
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import ComponentError, ComponentTimeoutError
from rewardserve.scoring.validate import Inputs


def bearer(api_key_env: str | None) -> dict[str, str]:
    """The Authorization header, from the environment variable the spec names."""
    key = os.environ.get(api_key_env) if api_key_env else None
    return {"Authorization": f"Bearer {key}"} if key else {}


async def posted(client: httpx.AsyncClient, name: str, path: str, body: dict[str, Any]) -> Any:
    """The JSON answer to `body`; ComponentError naming the component for anything else."""
    try:
        answer = await client.post(path, json=body)
    except httpx.TimeoutException as error:
        raise ComponentTimeoutError(f"component {name}: {client.base_url}{path}: {type(error).__name__}") from None
    except httpx.HTTPError as error:
        raise ComponentError(f"component {name}: {client.base_url}{path}: {type(error).__name__}: {error}") from None
    if answer.status_code != 200:
        status = answer.status_code
        raise ComponentError(f"component {name}: {client.base_url}{path} answered {status}: {answer.text[:300]}")
    return answer.json()


class RemoteReward(Component):
    spec: RemoteComponent

    def __init__(self, name: str, spec: RemoteComponent) -> None:
        super().__init__(name, spec)
        self.client = httpx.AsyncClient(base_url=spec.url.rstrip("/"), headers=bearer(spec.api_key_env), timeout=None)

    async def stop(self) -> None:
        await self.client.aclose()

    async def values(self, context: RequestContext, inputs: Inputs, items: list[Item]) -> np.ndarray:
        try:
            if self.spec.protocol == "score":
                return await self._scored(items)
            return await self._classified(items)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            what = f"{type(error).__name__}: {error}"
            raise ComponentError(f"component {self.name}: a malformed answer: {what}") from None

    async def _scored(self, items: list[Item]) -> np.ndarray:
        body = {"items": [_score_item(item) for item in items], "truncate": True}
        if self.spec.model:
            body["model"] = self.spec.model
        rewards = (await posted(self.client, self.name, "/score", body))["rewards"]
        if len(rewards) != len(items):
            raise ValueError(f"{len(rewards)} rewards for {len(items)} items")
        return np.array(rewards, dtype=np.float64)

    async def _classified(self, items: list[Item]) -> np.ndarray:
        """vLLM's /classify: the text items in one request, each conversation in its own."""
        common: dict[str, Any] = {"use_activation": False, "truncate_prompt_tokens": -1}
        if self.spec.model:
            common["model"] = self.spec.model
        texts = [i for i, item in enumerate(items) if isinstance(item.prompt, str)]
        chats = [i for i, item in enumerate(items) if not isinstance(item.prompt, str)]
        values = np.empty(len(items))

        async def text_batch() -> None:
            if texts:
                body = {**common, "input": [items[i].prompt + items[i].response for i in texts]}  # type: ignore[operator]
                data = (await posted(self.client, self.name, "/classify", body))["data"]
                values[texts] = [row["probs"][-1] for row in data]

        async def chat(i: int) -> None:
            messages = [*items[i].prompt, {"role": "assistant", "content": items[i].response}]
            data = (await posted(self.client, self.name, "/classify", {**common, "messages": messages}))["data"]
            values[i] = data[-1]["probs"][-1]

        await asyncio.gather(text_batch(), *(chat(i) for i in chats))
        return values


def _score_item(item: Item) -> dict[str, Any]:
    if isinstance(item.prompt, str):
        scored: dict[str, Any] = {"prompt": item.prompt, "response": item.response}
    else:
        scored = {"messages": [*item.prompt, {"role": "assistant", "content": item.response}]}
    if item.label is not None:
        scored["label"] = item.label
    return scored
