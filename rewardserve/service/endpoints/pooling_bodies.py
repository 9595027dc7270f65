"""The request body vLLM's pooling endpoints share (`/classify`, `/pooling`; SGLang's
`/v1/embeddings` takes its `input`), read as rewardserve reads a policy's text.

`input` is one text or a list, each a whole conversation as a chat template wrote it (verl
renders it with the reward model's template and strips the leading BOS): parsed back to
messages (retemplate.py) and rendered with the model's own template, so the reward is the one
`/score` gives the same conversation, BOS included once. `messages` is one conversation, its
last message the response. Token ids are refused: the server renders the model's template
itself, and ids from another tokenizer would be scored without a word.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardserve.scoring.schemas import Messages, ModelName, Text
from rewardserve.scoring.validate import Input, Inputs, Validate
from rewardserve.service.endpoints.base import Answer, Endpoint


class PoolingRequest(BaseModel):
    # vLLM accepts fields it does not use (priority, user, ...), and so do we; the ones that
    # would change what is scored are refused below.
    model_config = ConfigDict(extra="allow")
    model: ModelName = None
    input: Text | list[Text] | list[int] | list[list[int]] | None = Field(
        None,
        description="Conversations as a chat template wrote them (a leading BOS may be left out): parsed back to "
        "messages and rendered with the model's own template.",
    )
    messages: Messages | None = Field(None, description="One conversation; the last message is the response.")
    truncate_prompt_tokens: int | None = Field(
        None,
        description="-1: cut a sequence over the model's length by its policy (earliest turns first). "
        "Unset: a sequence over it is refused (413).",
    )
    add_special_tokens: bool | None = Field(
        None, description="Accepted; the model's template decides the special tokens (one BOS where it has one)."
    )

    @model_validator(mode="after")
    def _one_form(self) -> PoolingRequest:
        if (self.input is None) == (self.messages is None):
            raise ValueError("input: required, or messages (not both)")
        if isinstance(self.input, list) and self.input and not isinstance(self.input[0], str):
            raise ValueError(
                "input: token ids are not scored: send text or messages, which the server renders with the "
                "model's own template and tokenizer"
            )
        if self.messages is not None and self.messages[-1].role != "assistant":
            raise ValueError(
                f"messages: the last message is the response: an assistant's, not a {self.messages[-1].role}'s"
            )
        for name in ("chat_template", "chat_template_kwargs"):
            if (self.model_extra or {}).get(name) is not None:
                raise ValueError(f"{name}: not accepted: conversations are rendered with the model's own template")
        if self.truncate_prompt_tokens not in (None, -1):
            raise ValueError(
                f"truncate_prompt_tokens: {self.truncate_prompt_tokens}: only -1 (cut to the model's length by "
                "its policy) or unset (refuse what is over it)"
            )
        return self

    def read(self, check: Validate) -> Inputs:
        """The sequences to score: each text of `input`, or the one conversation of `messages`."""
        truncate = self.truncate_prompt_tokens is not None
        asked = TRUNCATE_PROMPT_TOKENS
        if self.messages is not None:
            conversation = check.messages("messages", self.messages)
            return Inputs([Input(conversation[:-1], conversation[-1:], "messages")], 1, truncate, truncated_by=asked)
        texts = [self.input] if isinstance(self.input, str) else self.input
        assert texts is not None
        sequences = check.policy_texts("input", texts)  # type: ignore[arg-type]
        return Inputs(sequences, len(texts), truncate, truncated_by=asked)


# How vLLM's pooling requests ask to be cut to the model's length, named in a refusal.
TRUNCATE_PROMPT_TOKENS = '"truncate_prompt_tokens": -1'


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens scored, after the model's template and any truncation.")
    total_tokens: int
    completion_tokens: int = 0


def usage(answer: Answer) -> Usage:
    tokens = answer.context.tokens or 0
    return Usage(prompt_tokens=tokens, total_tokens=tokens)


class Listed(BaseModel):
    """vLLM's envelope around an answer's `data`."""

    id: str
    object: str = "list"
    created: int
    model: str
    usage: Usage


def listed(answer: Answer, kind: str) -> dict[str, Any]:
    """What vLLM's answers carry around their `data`: an id, the time, the model, the tokens."""
    return {
        "id": f"{kind}-{answer.context.request_id}",
        "created": int(time.time()),
        "model": answer.model.model_name,
        "usage": usage(answer),
    }


class ReadsPoolingBody(Endpoint[PoolingRequest]):
    """An endpoint whose body is a PoolingRequest (or an extension of it)."""

    def inputs(self, body: PoolingRequest, check: Validate) -> Inputs:
        return body.read(check)


def outputs(answer: Answer) -> np.ndarray:
    """Each sequence's raw outputs, one row each: a multi-objective model's objectives in its
    manifest's order, else the reward alone."""
    objectives = answer.scores.objectives
    return answer.rewards[:, None] if objectives is None else objectives
