"""The parts of request bodies that every caller of the core shares: the HTTP endpoints' bodies
(`service/endpoints/`) and offline jobs' items (`offline.py`) are read with the same types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from rewardserve.bundle.policy_text import POLICY_FORMATS


class Body(BaseModel):
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


class Message(Body):
    role: str = Field(description="user, assistant, system, ...")
    content: Text


Messages = Annotated[list[Message], Field(min_length=1)]


def _known_format(name: str | None) -> str | None:
    if name is not None and name not in (*POLICY_FORMATS, "auto", "raw"):
        raise ValueError(f"{name!r}: not a policy format (auto, raw, {', '.join(POLICY_FORMATS)})")
    return name


PolicyFormat = Annotated[str | None, AfterValidator(_known_format)]


def one_form(body: Any, texts: tuple[str, ...]) -> None:
    """Either every field of `texts`, or `messages` (the chat form), never both."""
    given = [name for name in texts if getattr(body, name) is not None]
    if body.messages is not None:
        if given:
            raise ValueError(f"{given[0]}: not with messages (send text fields or messages, not both)")
    elif len(given) < len(texts):
        missing = next(name for name in texts if name not in given)
        raise ValueError(f"{missing}: required (or messages, the chat form)")


# Every body may name the served model to score with: `models.py` routes by it.
ModelName = Annotated[
    str | None,
    Field(
        description="The served model to score with (/v1/models); default: the server's first. A server of one "
        "model accepts any name."
    ),
]
