"""`POST /pooling`: vLLM's pooling API: each sequence's raw outputs (the reward, or each
objective in the manifest's order), never activated."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from rewardserve.service.endpoints.base import Endpoint
from rewardserve.service.endpoints.pooling_bodies import PoolingRequest, Usage, created, outputs, usage
from rewardserve.service.respond import Answer
from rewardserve.service.validate import Inputs, Validate


class Pooled(BaseModel):
    index: int
    object: Literal["pooling"] = "pooling"
    data: list[float]


class PoolingResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[Pooled]
    usage: Usage


class Pooling(Endpoint[PoolingRequest]):
    """vLLM's pooling API: each sequence's raw reward (or objectives) in `data[i].data`."""

    paths = ("/pooling",)
    body = PoolingRequest
    response = PoolingResponse

    def inputs(self, body: PoolingRequest, check: Validate) -> Inputs:
        return body.read(check)

    def respond(self, body: PoolingRequest, answer: Answer) -> PoolingResponse:
        data = [Pooled(index=i, data=row.tolist()) for i, row in enumerate(outputs(answer))]
        return PoolingResponse(
            id=f"pool-{answer.context.request_id}",
            created=created(),
            model=answer.model.model_name,
            data=data,
            usage=usage(answer),
        )
