"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    # Unknown fields are errors, not silently ignored: a typo ("respones") must not score "".
    model_config = ConfigDict(extra="forbid")


def _encodable(text: str) -> str:
    # JSON can spell lone surrogates ("\ud800"), which are not Unicode text and which the
    # tokenizer cannot take: refuse them here, naming the field, instead of failing later.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode text: a lone surrogate at character {exc.start}") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]

TRUNCATE = Field(
    True,
    description="Cut sequences over the model's length by the bundle's policy (the prompt from the left); "
    "false answers 413 naming the item instead.",
)


class ScoreItem(_Body):
    prompt: Text = Field(description="The conversation so far, e.g. '\\n\\nHuman: How do I ...?'")
    response: Text = Field(description="The response to score.")


class ScoreRequest(_Body):
    items: list[ScoreItem] = Field(min_length=1)
    truncate: bool = TRUNCATE


class ScoreResponse(BaseModel):
    rewards: list[float] = Field(description="One scalar reward per item, in request order.")
    model: str


class CompareItem(_Body):
    prompt: Text
    a: Text = Field(description="First candidate response.")
    b: Text = Field(description="Second candidate response.")


class CompareRequest(_Body):
    items: list[CompareItem] = Field(min_length=1)
    truncate: bool = TRUNCATE


class CompareResult(BaseModel):
    reward_a: float
    reward_b: float
    p_a_better: float = Field(description="Bradley-Terry probability sigmoid((reward_a - reward_b) / T).")


class CompareResponse(BaseModel):
    results: list[CompareResult]
    model: str


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, starting with the field it is about.")
    error_type: str = Field(description="Stable machine-readable kind, e.g. overloaded, too_many_items.")
    error_id: str | None = Field(None, description="Server faults only: the id logged with the traceback.")
    detail: list[dict[str, Any]] | None = Field(None, description="Validation errors only: FastAPI's list.")


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF's remote reward protocol (`--remote_rm_url http://host:port/get_reward`)."""

    # Other fields OpenRLHF versions send are ignored, so its requests work unchanged.
    model_config = ConfigDict(extra="ignore")
    query: list[Text] = Field(min_length=1, description="Full texts: each prompt followed by its response.")
    prompts: list[Text] | None = Field(
        None, description="The prompt each query starts with; without it, a whole query is scored as the response."
    )
    labels: list[Any] | None = Field(None, description="Accepted and unused: a reward model needs no labels.")

    @model_validator(mode="after")
    def _queries_start_with_their_prompts(self) -> OpenRLHFRewardRequest:
        if self.prompts is None:
            return self
        if len(self.prompts) != len(self.query):
            raise ValueError(f"prompts: {len(self.prompts)} prompts for {len(self.query)} queries")
        for index, (query, prompt) in enumerate(zip(self.query, self.prompts, strict=True)):
            if not query.startswith(prompt):
                raise ValueError(f"query[{index}] does not start with prompts[{index}]")
        return self

    def pairs(self) -> tuple[list[str], list[str]]:
        """(prompts, responses): each query split after its prompt."""
        prompts = self.prompts or [""] * len(self.query)
        return list(prompts), [query[len(prompt) :] for query, prompt in zip(self.query, prompts, strict=True)]


class OpenRLHFRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="The same rewards: OpenRLHF filters samples by these.")
    extra_logs: dict[str, list[float]] = Field(default_factory=dict)
