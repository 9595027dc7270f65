"""`POST /classify` and `/v1/classify`: vLLM's classification API, as verl's reward loop calls
a reward model (`{"model", "input", "use_activation": false}`, reading `data[-1].probs[-1]`).

Each sequence answers `probs`: a one-output model its reward, through a sigmoid unless
`use_activation` (older clients: `activation`) is false; a multi-objective model every
objective in its manifest's order, through a softmax unless false, as vLLM activates a
classifier's outputs. `label` is the top output's name (`LABEL_0` for a reward alone, as
transformers names a one-label head).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from rewardserve.service.endpoints.base import Answer
from rewardserve.service.endpoints.pooling_bodies import Listed, PoolingRequest, ReadsPoolingBody, listed, outputs


class ClassifyRequest(PoolingRequest):
    use_activation: bool | None = Field(
        None, description="false: the raw reward (what a reward model's users want); unset or true: activated."
    )
    activation: bool | None = Field(None, description="What older vLLM clients call use_activation.")


class Classification(BaseModel):
    index: int
    label: str
    probs: list[float]
    num_classes: int


class ClassifyResponse(Listed):
    data: list[Classification]


class Classify(ReadsPoolingBody):
    """vLLM's classification API: `probs` holds the reward (or each objective), activated
    unless `use_activation` is false."""

    paths = ("/classify", "/v1/classify")
    body = ClassifyRequest
    response = ClassifyResponse

    def respond(self, body: ClassifyRequest, answer: Answer) -> ClassifyResponse:  # type: ignore[override]
        values = outputs(answer)
        activate = next((flag for flag in (body.use_activation, body.activation) if flag is not None), True)
        probs = _activated(values) if activate else values
        names = answer.model.labels
        data = [
            Classification(index=i, label=names[int(np.argmax(row))], probs=row.tolist(), num_classes=len(row))
            for i, row in enumerate(probs)
        ]
        return ClassifyResponse(**listed(answer, "classify"), data=data)


def _activated(values: np.ndarray) -> np.ndarray:
    """vLLM's default activation: a sigmoid for one output, a softmax over several."""
    values = values.astype(np.float64)
    if values.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-values))
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
