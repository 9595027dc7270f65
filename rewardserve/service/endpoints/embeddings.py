"""`POST /v1/embeddings`: the OpenAI embeddings API, as SGLang answers it for a reward model
and as verl's reward loop reads it with an SGLang backend (`data[-1].embedding[-1]`): each
sequence's raw reward (or objectives, in the manifest's order) as its `embedding`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from rewardserve.service.endpoints.base import Answer
from rewardserve.service.endpoints.pooling_bodies import PoolingRequest, ReadsPoolingBody, Usage, outputs, usage


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float]
    index: int


class EmbeddingsResponse(BaseModel):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Embeddings(ReadsPoolingBody):
    """SGLang's reward answer: each sequence's raw reward (or objectives) as its `embedding`."""

    paths = ("/v1/embeddings",)
    body = PoolingRequest
    response = EmbeddingsResponse

    def respond(self, body: PoolingRequest, answer: Answer) -> EmbeddingsResponse:
        data = [Embedding(embedding=row.tolist(), index=i) for i, row in enumerate(outputs(answer))]
        return EmbeddingsResponse(data=data, model=answer.model.model_name, usage=usage(answer))
