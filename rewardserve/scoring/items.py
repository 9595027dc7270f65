"""What one item to score is, for every caller of the core: `/score`'s items over HTTP
(`service/endpoints/score.py`) and offline jobs' items (`offline.py`) are the same schema, read
into an Input by the same function, so an item gets the same reward whichever way it comes."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from pydantic import Field, model_validator

from rewardserve.scoring.schemas import Body, Messages, Text, one_form
from rewardserve.scoring.validate import Input, Validate, candidate, text_format_of


class ScoreItem(Body):
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

    label: Any = Field(
        None,
        description="What a composed reward's rules read beside the text: the reference answer (a math rule's), "
        'or {"answer": ..., "unsafe": true} (Llama 2\'s safety gate). A reward model alone ignores it.',
    )

    @model_validator(mode="after")
    def _one_form(self) -> ScoreItem:
        if self.steps is not None:
            if self.response is not None:
                raise ValueError("response: not with steps (send the response as text or as steps)")
            one_form(self, texts=("prompt",))
            return self
        one_form(self, texts=("prompt", "response"))
        if self.messages is not None and self.messages[-1].role != "assistant":
            role = self.messages[-1].role
            raise ValueError(f"messages: the last message is the response: an assistant's, not a {role}'s")
        return self


def score_input(path: str, item: ScoreItem, policy_format: str | None, check: Validate) -> Input:
    """The sequence `item` (at `path`) asks to score, within `check`'s limits, with its label;
    its text in `policy_format` when set (retemplate.py parses it)."""
    return replace(_spelled(path, item, policy_format, check), label=item.label)


def _spelled(path: str, item: ScoreItem, policy_format: str | None, check: Validate) -> Input:
    if item.steps is not None:  # counted with every other response's steps (Validate)
        response = check.steps_response(f"{path}.steps", item.steps)
        prompt = check.prompt(f"{path}.prompt", item.prompt, item.messages, f"{path}.messages")
        return candidate(prompt, response, f"{path}.steps")
    if item.messages is None:
        assert item.prompt is not None and item.response is not None
        check.text(f"{path}.prompt", item.prompt)
        check.text(f"{path}.response", item.response)
        return Input(item.prompt, item.response, path, text_format_of(policy_format))
    conversation = check.messages(f"{path}.messages", item.messages)
    return Input(conversation[:-1], conversation[-1:], f"{path}.messages")
