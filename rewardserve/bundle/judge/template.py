"""The text a judge reads: the model's own chat template around a rubric.

A rubric is the user turn of the judge's conversation, with slots for the conversation being
judged: `{prompt}` (the prompt's turns) and `{response}` (the response); a pairwise judge's
rubric has `{response_a}` and `{response_b}` instead, and reads a ResponsePair. The judge's text is

    render(chat_template, [system?, {"role": "user", "content": rubric filled}],
           add_generation_prompt=True) + answer_prefix

which is what `tokenizer.apply_chat_template(messages, add_generation_prompt=True,
tokenize=False) + answer_prefix` gives a judge's users; the verdict token is the next one, read
at the text's last token. Everything before the first response's slot is the same for every
response to one prompt: the server runs it once for a GRPO group (bundle/prefix.py), as it runs a chat
RM's prompt once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, Field, model_validator

from rewardserve.bundle.chat import ChatTemplateError, Conversation, Message, render

PROMPT_SLOT = "{prompt}"
RESPONSE_SLOT = "{response}"
PAIR_SLOTS = ("{response_a}", "{response_b}")
_SLOTS = re.compile(r"\{prompt\}|\{response(?:_a|_b)?\}")
# Stands for the response while the text before it is found: a private-use character no
# tokenizer merges with its neighbours, and no template rewrites.
_MARK = "\ue000"


class ResponsePair(NamedTuple):
    """The two responses a pairwise judge reads in one text, `a` in the rubric's first slot."""

    a: str | Conversation
    b: str | Conversation

    def swapped(self) -> ResponsePair:
        return ResponsePair(self.b, self.a)


class TooLongToJudge(ChatTemplateError):
    """A judge's text over the model's length once the earliest turns are gone: its rubric is
    never cut, since a judge that lost its question would still answer, wrongly."""


class JudgeTemplate(BaseModel):
    """How the judge is asked: stored in the bundle's input format."""

    rubric: str = Field(
        description="The judge's user turn: `{response}` once, where the response goes (a pairwise judge: "
        "`{response_a}` and `{response_b}` once each); `{prompt}` at most once, where the prompt's turns go (a "
        "single user turn as its text, several as 'Role: text' paragraphs)."
    )
    system: str | None = Field(None, description="A system turn before the rubric, for models that take one.")
    answer_prefix: str = Field(
        "", description="The start of the judge's answer after the generation prompt, e.g. 'Rating: ' or '[['."
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="What the chat template reads besides messages, as apply_chat_template takes it "
        "(Qwen3: {'enable_thinking': false}).",
    )

    @model_validator(mode="after")
    def _slots(self) -> JudgeTemplate:
        counts = tuple(self.rubric.count(slot) for slot in (RESPONSE_SLOT, *PAIR_SLOTS))
        if counts not in ((1, 0, 0), (0, 1, 1)):
            raise ValueError(
                f"rubric: needs the slot {RESPONSE_SLOT} exactly once, or (a pairwise judge) {PAIR_SLOTS[0]} and "
                f"{PAIR_SLOTS[1]} once each (it has them {counts} times): a judge with no response to read would "
                "give every response the same reward"
            )
        if self.rubric.count(PROMPT_SLOT) > 1:
            raise ValueError(f"rubric: the slot {PROMPT_SLOT} at most once")
        return self

    @property
    def pairwise(self) -> bool:
        """Whether the judge reads two responses at once (a ResponsePair)."""
        return PAIR_SLOTS[0] in self.rubric

    def describe(self) -> str:
        system = f"system {self.system!r}; " if self.system else ""
        return f"{system}rubric {self.rubric!r}; answer starts {self.answer_prefix!r}"


def transcript(turns: Conversation) -> str:
    """Turns as the rubric's slot holds them: one turn as its text; several as 'Role: text'
    paragraphs (System, User, Assistant), in order."""
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)


Response = str | Conversation | ResponsePair


def _text(response: str | Conversation) -> str:
    return response if isinstance(response, str) else transcript(response)


def judge_messages(template: JudgeTemplate, prompt: Conversation, response: Response) -> list[Message]:
    """The judge's conversation: its system turn, and the rubric with the slots filled (in one
    pass, so text in a slot that spells another slot stays as it is). ChatTemplateError when the
    judge reads two responses and got one, or the other way round."""
    if isinstance(response, ResponsePair) != template.pairwise:
        raise ChatTemplateError(
            "this judge compares two responses (a pairwise judge): send them to /compare"
            if template.pairwise
            else "this judge reads one response at a time, not a pair"
        )
    if isinstance(response, ResponsePair):
        slots = {PROMPT_SLOT: transcript(prompt), PAIR_SLOTS[0]: _text(response.a), PAIR_SLOTS[1]: _text(response.b)}
    else:
        slots = {PROMPT_SLOT: transcript(prompt), RESPONSE_SLOT: _text(response)}
    user = _SLOTS.sub(lambda match: slots[match.group(0)], template.rubric)
    return [
        *([{"role": "system", "content": template.system}] if template.system else []),
        {"role": "user", "content": user},
    ]


def judge_text(
    template: JudgeTemplate,
    chat_template: str,
    variables: Mapping[str, str],
    prompt: Conversation,
    response: Response,
) -> tuple[str, str]:
    """(the text before the response, the response and the rest): the judge's whole text, split
    where the (first) response's slot begins. ChatTemplateError when the template renders the text
    before the response differently with another response after it (it then cannot be shared)."""
    variables = {**variables, **template.chat_template_kwargs}
    full = render(chat_template, judge_messages(template, prompt, response), True, variables) + template.answer_prefix
    mark: Response = ResponsePair(_MARK, _MARK) if template.pairwise else _MARK
    marked = render(chat_template, judge_messages(template, prompt, mark), True, variables)
    if marked.count(_MARK) != (2 if template.pairwise else 1):
        raise ChatTemplateError("the chat template does not render each of the judge's response slots once")
    before = marked[: marked.index(_MARK)]
    if not full.startswith(before):
        raise ChatTemplateError("the chat template renders the text before the response differently per response")
    return before, full[len(before) :]
