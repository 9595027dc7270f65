"""A length rule: DAPO's soft overlong punishment, on the response's characters. 0 up to
`limit - buffer`, then falling linearly to -1 at `limit`, and -1 beyond it."""

from __future__ import annotations

import numpy as np

from rewardserve.compose.components.base import Component, Item
from rewardserve.compose.spec import LengthComponent
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.validate import Inputs


def overlong_penalty(length: int, limit: int, buffer: int) -> float:
    return float(np.clip((limit - buffer - length) / buffer, -1.0, 0.0))


class LengthRule(Component):
    spec: LengthComponent

    async def values(self, context: RequestContext, inputs: Inputs, items: list[Item]) -> np.ndarray:
        return np.array([overlong_penalty(len(i.response), self.spec.limit, self.spec.buffer) for i in items])
