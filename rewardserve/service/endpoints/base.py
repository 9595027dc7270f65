"""What an endpoint is: a body schema, how it reads into the sequences to score, and how their
scores become its response. The pipeline does the rest, the same for every endpoint."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from rewardserve.scoring.validate import Inputs, Validate
from rewardserve.service.respond import Answer

B = TypeVar("B", bound=BaseModel)


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
