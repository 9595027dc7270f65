"""What an endpoint is: a body schema, how it reads into the sequences to score, and how their
scores become its response; and `answer`, one request through them and the scoring core's
pipeline, the same for every endpoint."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel

from rewardserve.bundle.outputs import Scores
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.models import Served
from rewardserve.scoring.validate import Inputs, Validate

B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Answer:
    """What an endpoint answers from: the request's scores and inputs, its context, and what any
    response may say of the model."""

    scores: Scores
    inputs: Inputs
    context: RequestContext
    model: ServedModel

    @property
    def rewards(self) -> np.ndarray:
        return self.scores.rewards


class Endpoint(ABC, Generic[B]):
    """One scoring endpoint. Its class docstring is its description in the OpenAPI document."""

    paths: ClassVar[tuple[str, ...]]  # the routes that answer it
    body: ClassVar[type[BaseModel]]
    response: ClassVar[Any]  # the response model, for validation and the OpenAPI document
    # Leave out fields the model has no values for (objectives, steps) instead of answering null.
    omit_none: ClassVar[bool] = False

    @abstractmethod
    def inputs(self, body: B, check: Validate) -> Inputs:
        """The sequences `body` asks to score, in the order its answer reads their scores."""

    @abstractmethod
    def respond(self, body: B, answer: Answer) -> Any:
        """The response body."""


async def answer(pipeline: Served, context: RequestContext, endpoint: Endpoint[B], body: B) -> Any:
    """`endpoint`'s response to one request: its body read into Inputs with the core's checks,
    scored by the core, written from the scores; a ServiceError says why there is none."""
    check = pipeline.validate
    inputs = check.complete(endpoint.inputs(body, check))
    scores = await pipeline.scores(context, inputs)
    return endpoint.respond(body, Answer(scores, inputs, context, pipeline.model))
