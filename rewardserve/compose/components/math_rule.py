"""A math rule: math-verify (Hugging Face's answer verifier, the one open-r1 and TRL's recipes
use) parses the response's final answer and the item's label (the reference answer) and
compares them as mathematics: `correct` when they are equal (1/2 = 0.5 = \\frac{1}{2}), else
`wrong`, a response without an answer included.

math-verify bounds its own parsing and comparing with signal.alarm, which works only in a
process's main thread, and sympy can take long on hostile input: so it runs in a worker process
of its own (its main thread), never on the server's event loop or its threads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from rewardserve.compose.components.base import Component, Item
from rewardserve.compose.spec import MathComponent
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import InvalidLabelError
from rewardserve.scoring.validate import Inputs


def verified(pairs: list[tuple[str, str]]) -> list[bool | None]:
    """For each (response, reference): whether the response's answer equals it; None where the
    reference itself does not parse. Runs in the worker process."""
    from math_verify import parse, verify

    results: list[bool | None] = []
    for response, reference in pairs:
        # A bare reference ("0.5", "\\frac{1}{2}") parses as an expression or as inline LaTeX.
        gold = parse(reference) or parse(f"${reference}$")
        results.append(None if not gold else bool(verify(gold, parse(response))))
    return results


def _ready() -> bool:
    import math_verify  # noqa: F401  (sympy and the grammar, loaded once, at start)

    return True


class MathRule(Component):
    spec: MathComponent

    def __init__(self, name: str, spec: MathComponent) -> None:
        super().__init__(name, spec)
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        # Spawned, not forked: the server's process holds engine threads a fork would copy mid-state.
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        await asyncio.get_running_loop().run_in_executor(self._pool, _ready)

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def values(self, context: RequestContext, inputs: Inputs, items: list[Item]) -> np.ndarray:
        pairs = [(item.response, item.answer()) for item in items]
        assert self._pool is not None, "started with the server"
        results: list[Any] = await asyncio.get_running_loop().run_in_executor(self._pool, verified, pairs)
        for item, result in zip(items, results, strict=True):
            if result is None:
                raise InvalidLabelError(f"{item.path}: math-verify finds no answer in the label {item.answer()!r}")
        return np.array([self.spec.correct if result else self.spec.wrong for result in results])
