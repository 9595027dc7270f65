"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    # Unknown fields are errors, not silently ignored: a typo ("respones") must not score "".
    model_config = ConfigDict(extra="forbid")


class ScoreItem(_Body):
    prompt: str = Field(description="The conversation so far, e.g. '\\n\\nHuman: How do I ...?'")
    response: str = Field(description="The response to score.")


class ScoreRequest(_Body):
    items: list[ScoreItem] = Field(min_length=1)


class ScoreResponse(BaseModel):
    rewards: list[float] = Field(description="One scalar reward per item, in request order.")
    model: str


class CompareItem(_Body):
    prompt: str
    a: str = Field(description="First candidate response.")
    b: str = Field(description="Second candidate response.")


class CompareRequest(_Body):
    items: list[CompareItem] = Field(min_length=1)


class CompareResult(BaseModel):
    reward_a: float
    reward_b: float
    p_a_better: float = Field(description="Bradley-Terry probability sigmoid((reward_a - reward_b) / T).")


class CompareResponse(BaseModel):
    results: list[CompareResult]
    model: str


class ErrorResponse(BaseModel):
    error: str
    error_type: str
