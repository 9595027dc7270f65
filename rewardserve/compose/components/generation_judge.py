"""A chain-of-thought judge on a generation engine, as a component: the spec's rubric filled in
with each item's prompt and response, sent to an OpenAI-compatible `/chat/completions` (vLLM,
SGLang) at temperature 0, and the verdict read from the judge's completion with the spec's
pattern (its last match: the verdict follows the reasoning), mapped to [0, 1] by `scale`.

A completion without a verdict is the component's failure (502 naming it, or its fallback), as
is anything else the engine answers amiss; its timeout is the spec's. (A judge that answers in
one verdict token is better served as a judge bundle: `rewardserve export --judge`, read from
its whole-vocabulary softmax.)"""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np

from rewardserve.compose.components.base import Component, Item
from rewardserve.compose.components.remote import bearer, posted
from rewardserve.compose.spec import JudgeComponent
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import ComponentError
from rewardserve.scoring.validate import Inputs

# Completions in flight at once per request: the engine batches them itself.
IN_FLIGHT = 64


class GenerationJudge(Component):
    spec: JudgeComponent

    def __init__(self, name: str, spec: JudgeComponent) -> None:
        super().__init__(name, spec)
        self.pattern = re.compile(spec.verdict)
        self.client = httpx.AsyncClient(base_url=spec.url.rstrip("/"), headers=bearer(spec.api_key_env), timeout=None)

    async def stop(self) -> None:
        await self.client.aclose()

    def rubric(self, item: Item) -> str:
        # Not str.format: a rubric may hold other braces (a JSON example).
        return self.spec.rubric.replace("{prompt}", item.prompt_text()).replace("{response}", item.response)

    async def values(self, context: RequestContext, inputs: Inputs, items: list[Item]) -> np.ndarray:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def judged(item: Item) -> float:
            async with slots:
                return await self._verdict(item)

        return np.array(await asyncio.gather(*(judged(item) for item in items)))

    async def _verdict(self, item: Item) -> float:
        body = {
            **self.spec.request_fields,
            "model": self.spec.model,
            "messages": [{"role": "user", "content": self.rubric(item)}],
            "max_tokens": self.spec.max_tokens,
            "temperature": 0.0,
        }
        answer = await posted(self.client, self.name, "/chat/completions", body)
        try:
            completion = answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ComponentError(f"component {self.name}: the engine's answer has no completion") from None
        found = self.pattern.findall(completion)
        if not found:
            raise ComponentError(
                f"component {self.name}: {item.path}: no verdict matching {self.spec.verdict!r} in the judge's "
                f"completion (its end: {completion[-200:]!r})"
            )
        last = found[-1][0] if isinstance(found[-1], tuple) else found[-1]
        try:
            verdict = float(last)
        except ValueError:
            raise ComponentError(f"component {self.name}: {item.path}: the verdict {last!r} is not a number") from None
        if self.spec.scale is None:
            return verdict
        low, high = self.spec.scale
        return (verdict - low) / (high - low)
