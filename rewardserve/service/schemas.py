"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from rewardserve.bundle.policy_text import POLICY_FORMATS


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


class Message(_Body):
    role: str = Field(description="user, assistant, system, ...")
    content: Text


Messages = Annotated[list[Message], Field(min_length=1)]


class ScoreItem(_Body):
    """Either `prompt` and `response`, or `messages`: a conversation whose last (assistant)
    message is the response, rendered with the bundle's chat template. For a process reward
    model, the response may come as `steps` instead, beside `prompt` or `messages` (then the
    conversation so far): the server writes each step followed by the model's step separator."""

    prompt: Text | None = Field(None, description="The conversation so far, e.g. '\\n\\nHuman: How do I ...?'")
    response: Text | None = Field(None, description="The response to score.")
    messages: Messages | None = Field(None, description="Chat form: the last message is the assistant's response.")
    steps: Annotated[list[Text], Field(min_length=1)] | None = Field(
        None,
        description="Process reward models: the response's reasoning steps, without separators; the response "
        "scored is separator.join(steps) + separator.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ScoreItem:
        if self.steps is not None:
            if self.response is not None:
                raise ValueError("response: not with steps (send the response as text or as steps)")
            _one_form(self, texts=("prompt",))
            return self
        _one_form(self, texts=("prompt", "response"))
        if self.messages is not None and self.messages[-1].role != "assistant":
            role = self.messages[-1].role
            raise ValueError(f"messages: the last message is the response: an assistant's, not a {role}'s")
        return self


def _known_format(name: str | None) -> str | None:
    if name is not None and name not in (*POLICY_FORMATS, "auto", "raw"):
        raise ValueError(f"{name!r}: not a policy format (auto, raw, {', '.join(POLICY_FORMATS)})")
    return name


PolicyFormat = Annotated[str | None, AfterValidator(_known_format)]


class ScoreRequest(_Body):
    items: list[ScoreItem] = Field(min_length=1)
    objectives: list[str] | None = Field(
        None,
        description="Multi-objective models: the objectives to answer (default: all of them); [] answers none.",
    )
    truncate: bool = TRUNCATE
    policy_format: PolicyFormat = Field(
        None,
        description="Text items are a policy's chat-formatted prompt and its response (decoded with special "
        "tokens): parsed back to messages in this format ('auto': detected) and rendered with the model's "
        "template. Unset or 'raw': texts are scored as they are.",
    )


class StepReward(BaseModel):
    reward: float = Field(description="The step's reward: the model's probability of its step class.")
    span: tuple[int, int] = Field(description="[start, end) of the step's text in the response, separator excluded.")


class ScoreResponse(BaseModel):
    rewards: list[float] = Field(description="One scalar reward per item, in request order.")
    objectives: dict[str, list[float]] | None = Field(
        None, description="Multi-objective models: each objective's value per item, in request order."
    )
    objective_weights: dict[str, list[float]] | None = Field(
        None, description="Gated multi-objective models: the weight the gating network gave each objective per item."
    )
    steps: list[list[StepReward]] | None = Field(
        None, description="Process reward models: per item, each step's reward and character span in the response."
    )
    model: str


class CompareItem(_Body):
    """`prompt` (text) or `messages` (chat form: the conversation so far), and two responses."""

    prompt: Text | None = None
    messages: Messages | None = Field(None, description="Chat form of the prompt; a and b are assistant replies.")
    a: Text = Field(description="First candidate response.")
    b: Text = Field(description="Second candidate response.")

    @model_validator(mode="after")
    def _one_form(self) -> CompareItem:
        _one_form(self, texts=("prompt",))
        return self


class CompareRequest(_Body):
    """Pairs as `items`, or K responses to one prompt (`prompt` or `messages`, and `responses`)."""

    items: list[CompareItem] | None = Field(None, min_length=1, description="Pairs: (prompt, a, b) each.")
    prompt: Text | None = Field(None, description="K-wise: the prompt every response answers.")
    messages: Messages | None = Field(None, description="K-wise, chat form of the prompt.")
    responses: list[Text] | None = Field(None, min_length=2, description="K-wise: the candidate responses.")
    pairwise: bool = Field(True, description="K-wise: include the K x K matrix p_better (false for a large K).")
    truncate: bool = TRUNCATE

    @model_validator(mode="after")
    def _one_form(self) -> CompareRequest:
        if self.items is not None:
            extra = [name for name in ("prompt", "messages", "responses") if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{extra[0]}: not with items (send pairs as items, or one prompt with responses)")
            return self
        if self.responses is None:
            raise ValueError("items: required (or one prompt or messages with responses)")
        _one_form(self, texts=("prompt",))
        return self

    @property
    def ranked(self) -> bool:
        return self.items is None


class CompareResult(BaseModel):
    reward_a: float
    reward_b: float
    p_a_better: float = Field(description="Bradley-Terry probability sigmoid((reward_a - reward_b) / T).")


class CompareResponse(BaseModel):
    results: list[CompareResult]
    model: str


class RankingResponse(BaseModel):
    """K responses to one prompt, for best-of-n selection."""

    rewards: list[float] = Field(description="One reward per response, in request order.")
    ranking: list[int] = Field(description="Indices of the responses, best first (ties in request order).")
    p_best: list[float] = Field(description="Plackett-Luce first-choice probabilities softmax(rewards / T).")
    p_better: list[list[float]] | None = Field(
        None, description="p_better[i][j] = sigmoid((rewards[i] - rewards[j]) / T); omitted when pairwise is false."
    )
    model: str


def _one_form(body: ScoreItem | CompareItem | CompareRequest, texts: tuple[str, ...]) -> None:
    """Either every field of `texts`, or `messages` (the chat form), never both."""
    given = [name for name in texts if getattr(body, name) is not None]
    if body.messages is not None:
        if given:
            raise ValueError(f"{given[0]}: not with messages (send text fields or messages, not both)")
    elif len(given) < len(texts):
        missing = next(name for name in texts if name not in given)
        raise ValueError(f"{missing}: required (or messages, the chat form)")


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, starting with the field it is about.")
    error_type: str = Field(description="Stable machine-readable kind, e.g. overloaded, too_many_items.")
    error_id: str | None = Field(None, description="Server faults only: the id logged with the traceback.")
    detail: list[dict[str, Any]] | None = Field(None, description="Validation errors only: FastAPI's list.")


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF's remote reward protocol (`--remote_rm_url http://host:port/get_reward`)."""

    # Other fields OpenRLHF versions send are ignored, so its requests work unchanged.
    model_config = ConfigDict(extra="ignore")
    query: list[Text] = Field(
        description="Full texts, each a prompt followed by its response, as the policy's tokenizer decoded "
        "them: parsed back to messages (see policy_format) and rendered with the model's template."
    )
    prompts: list[Text] | None = Field(
        None, description="The prompt each query starts with; without it, a whole query is scored as the response."
    )
    labels: list[Any] | None = Field(None, description="Accepted and unused: a reward model needs no labels.")
    policy_format: PolicyFormat = Field(
        None,
        description="The queries' chat format ('auto': detected; 'raw': scored as they are, split after "
        "their prompts); default: the server's POLICY_FORMAT.",
    )

    @model_validator(mode="after")
    def _queries_start_with_their_prompts(self) -> OpenRLHFRewardRequest:
        if self.prompts is None:
            return self
        if len(self.prompts) != len(self.query):
            raise ValueError(f"prompts: {len(self.prompts)} prompts for {len(self.query)} queries")
        for index, (query, prompt) in enumerate(zip(self.query, self.prompts, strict=True)):
            if not query.startswith(prompt):
                raise ValueError(f"query[{index}]: does not start with prompts[{index}]")
        return self


class OpenRLHFRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="The same rewards: OpenRLHF filters samples by these.")
    extra_logs: dict[str, list[float]] = Field(default_factory=dict)


# What the scoring pipeline takes: the bodies of /score, /compare and /get_reward.
ScoringBody = ScoreRequest | CompareRequest | OpenRLHFRewardRequest
