"""A format rule: `match` where the response matches the spec's regular expression (re.search,
with `.` matching newlines), else `mismatch`: the format rewards GRPO recipes add (a
`<think>...</think>` block before the answer, a boxed answer)."""

from __future__ import annotations

import re

import numpy as np

from rewardserve.compose.components.base import Component, Item
from rewardserve.compose.spec import FormatComponent
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.validate import Inputs


class FormatRule(Component):
    spec: FormatComponent

    def __init__(self, name: str, spec: FormatComponent) -> None:
        super().__init__(name, spec)
        self.pattern = re.compile(spec.pattern, re.DOTALL)

    async def values(self, context: RequestContext, inputs: Inputs, items: list[Item]) -> np.ndarray:
        spec = self.spec
        return np.array([spec.match if self.pattern.search(i.response) else spec.mismatch for i in items])
