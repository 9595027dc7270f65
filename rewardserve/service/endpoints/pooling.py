"""`POST /pooling`: vLLM's pooling API: each sequence's raw outputs (the reward, or each
objective in the manifest's order), never activated."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from rewardserve.service.endpoints.base import Answer
from rewardserve.service.endpoints.pooling_bodies import Listed, PoolingRequest, ReadsPoolingBody, listed, outputs


class Pooled(BaseModel):
    index: int
    object: Literal["pooling"] = "pooling"
    data: list[float]


class PoolingResponse(Listed):
    data: list[Pooled]


class Pooling(ReadsPoolingBody):
    """vLLM's pooling API: each sequence's raw reward (or objectives) in `data[i].data`."""

    paths = ("/pooling",)
    body = PoolingRequest
    response = PoolingResponse

    def respond(self, body: PoolingRequest, answer: Answer) -> PoolingResponse:
        data = [Pooled(index=i, data=row.tolist()) for i, row in enumerate(outputs(answer))]
        return PoolingResponse(**listed(answer, "pool"), data=data)
