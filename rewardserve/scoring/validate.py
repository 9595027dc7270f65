"""Stage 1, validate: a request body (already parsed by its endpoint's schema) -> the sequences
to score. Each endpoint reads its body (`endpoints/`) with the checks here.

Each sequence is an Input: a text prompt and response, a conversation, or policy-formatted text
that `retemplate.py` parses into one, with the field path its errors name (`items[3].messages`). Size limits are
checked here, on the event loop, before anything is admitted: item counts
(`max_items_per_request`), characters per text (`max_text_chars`), steps per response
(`max_steps_per_item`) and objectives asked for (`max_objectives_per_request`).

For a process reward model, every response is read as steps: the character span of each step
(the text before each of the model's step separators) is found here, and `tokenize.py` checks
that tokenizing kept one step token per span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from rewardserve.bundle.chat import Conversation
from rewardserve.bundle.judge.template import Response
from rewardserve.bundle.outputs import ModelOutputs, join_steps, step_spans
from rewardserve.scoring.errors import (
    InvalidStepsError,
    TextTooLongError,
    TooManyItemsError,
    TooManyObjectivesError,
    TooManyStepsError,
    UnknownObjectiveError,
)


class Turn(Protocol):
    """A message as a request body spells it (the endpoints' schema): a role and its text."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Input:
    """One sequence to score, as the request spelled it: two texts, or the conversation so far
    and the assistant turn(s) to score."""

    prompt: str | Conversation
    response: Response  # a pairwise judge reads two at once
    path: str  # the request field its errors name
    # When set, prompt + response is one text in this policy chat format ("auto": detected),
    # which retemplate.py parses into the conversation scored.
    policy_format: str | None = None
    # Process reward models: [start, end) of each step in the response's text.
    steps: list[tuple[int, int]] | None = None
    # What the request says of the item beside its text, for composed rewards' rules: the
    # reference answer (a math rule's), or {"answer": ..., "unsafe": true} (Llama 2's gate).
    label: Any = None


@dataclass(frozen=True, slots=True)
class Inputs:
    """A request's sequences, in the order its rewards are answered."""

    sequences: list[Input]
    items: int  # what the request counts as items (a /compare pair is one item, two sequences)
    truncate: bool = True
    objectives: list[str] | None = None  # the objectives to answer, when the request named them
    # What the endpoint's body sends to have an over-long input cut, for its 413 to name.
    truncated_by: str = '"truncate": true'

    def __len__(self) -> int:
        return len(self.sequences)

    @classmethod
    def of_texts(
        cls,
        prompts: Sequence[str | Conversation],
        responses: Sequence[Response],
        step_separator: str | None = None,
    ) -> Inputs:
        """Sequences named by position (`[i]`): texts or, for chat-layout bundles, conversations;
        each (text) response one step when the model reads steps."""
        if step_separator is not None:
            responses = [join_steps([r], step_separator) for r in responses]
        pairs = zip(prompts, responses, strict=True)
        sequences = [
            Input(p, r, f"[{i}]", steps=None if step_separator is None else step_spans(r, step_separator))
            for i, (p, r) in enumerate(pairs)
        ]
        return cls(sequences, items=len(prompts))


class Validate:
    """The checks every endpoint's body passes on its way to Inputs (each endpoint's `inputs`
    calls them: `endpoints/`), within `max_items` per request and `max_chars` per text; for
    models with objectives or steps (`outputs`), within `max_objectives` asked for and
    `max_steps` per response."""

    def __init__(
        self,
        max_items: int,
        max_chars: int,
        policy_format: str = "auto",
        *,
        outputs: ModelOutputs | None = None,
        max_steps: int = 256,
        max_objectives: int = 64,
    ) -> None:
        self.max_items = max_items
        self.max_chars = max_chars
        self.policy_format = policy_format  # of policy text whose request does not name its format
        self.outputs = outputs or ModelOutputs()
        self.max_steps = max_steps
        self.max_objectives = max_objectives

    @property
    def step_separator(self) -> str | None:
        return None if self.outputs.steps is None else self.outputs.steps.separator

    def complete(self, inputs: Inputs) -> Inputs:
        """`inputs` as read with these checks, with each response's steps found, for a process
        reward model."""
        if self.step_separator is not None:
            inputs = replace(inputs, sequences=[self._with_steps(spelled) for spelled in inputs.sequences])
        return inputs

    def objectives(self, names: list[str] | None) -> list[str] | None:
        """The objectives a request named, each the model's own."""
        if names is None:
            return None
        if self.outputs.objectives is None:
            raise UnknownObjectiveError("objectives: this model has no objectives, only its reward")
        if len(names) > self.max_objectives:
            raise TooManyObjectivesError(
                f"objectives: {len(names)} named, at most {self.max_objectives} per request "
                "(max_objectives_per_request)"
            )
        known = self.outputs.objectives.names
        for j, name in enumerate(names):
            if name not in known:
                raise UnknownObjectiveError(f"objectives[{j}]: {name!r} is not one of the model's ({', '.join(known)})")
        return names

    def _with_steps(self, spelled: Input) -> Input:
        """`spelled` with the span of each step of its response; a response without one is refused."""
        separator = self.step_separator
        assert separator is not None
        text = spelled.response if isinstance(spelled.response, str) else spelled.response[-1]["content"]
        spans = step_spans(text, separator)
        if not spans:
            raise InvalidStepsError(
                f"{spelled.path}: no step ends with the model's step separator {separator!r}: end each step with it, "
                'or send the steps as "steps": [...]'
            )
        if len(spans) > self.max_steps:
            raise TooManyStepsError(
                f"{spelled.path}: {len(spans)} steps, at most {self.max_steps} per response (max_steps_per_item)"
            )
        return replace(spelled, steps=spans)

    def steps_response(self, path: str, steps: Sequence[str]) -> str:
        """The response text of `steps`: each followed by the model's separator."""
        separator = self.step_separator
        if separator is None:
            raise InvalidStepsError(f"{path}: this model gives no step rewards; send the response as text")
        for j, step in enumerate(steps):
            self.text(f"{path}[{j}]", step)
            if separator in step:
                raise InvalidStepsError(f"{path}[{j}]: holds the step separator {separator!r}; send it as two steps")
        return join_steps(steps, separator)

    def policy_texts(
        self, path: str, texts: Sequence[str], prompts: Sequence[str] | None = None, policy_format: str | None = None
    ) -> list[Input]:
        """Each text as the policy text it is (parsed by retemplate.py, in `policy_format` or the
        server's); with the "raw" format, split after its prompt as it is (the whole text is the
        response without prompts)."""
        self.count(path, len(texts))
        for i, text in enumerate(texts):
            self.text(f"{path}[{i}]", text)
        text_format = text_format_of(policy_format or self.policy_format)
        prompts = prompts or [""] * len(texts)
        pairs = enumerate(zip(texts, prompts, strict=True))
        return [Input(prompt, text[len(prompt) :], f"{path}[{i}]", text_format) for i, (text, prompt) in pairs]

    def prompt(
        self, path: str, prompt: str | None, messages: Sequence[Turn] | None, messages_path: str
    ) -> str | Conversation:
        """The text prompt, or the turns of its chat form."""
        if messages is None:
            assert prompt is not None
            self.text(path, prompt)
            return prompt
        return self.messages(messages_path, messages)

    def messages(self, path: str, messages: Sequence[Turn]) -> Conversation:
        """The turns of `messages`, each within the limits."""
        self.count(path, len(messages))
        for j, message in enumerate(messages):
            self.text(f"{path}[{j}].content", message.content)
        return [{"role": m.role, "content": m.content} for m in messages]

    def count(self, path: str, count: int) -> None:
        if count > self.max_items:
            raise TooManyItemsError(
                f"{path}: {count} items, at most {self.max_items} per request (max_items_per_request)"
            )

    def text(self, path: str, text: str) -> None:
        if len(text) > self.max_chars:
            raise TextTooLongError(f"{path}: {len(text)} characters, at most {self.max_chars} (max_text_chars)")


def text_format_of(policy_format: str | None) -> str | None:
    """What Input.policy_format says of text in `policy_format`: None (scored as it is) for raw."""
    return None if policy_format == "raw" else policy_format


def candidate(prompt: str | Conversation, response: str, path: str) -> Input:
    """A candidate response to `prompt`: text after a text prompt, an assistant turn after a conversation."""
    reply: Conversation = [{"role": "assistant", "content": response}]
    return Input(prompt, response if isinstance(prompt, str) else reply, path)


def labelled(sequences: list[Input], labels: Sequence[Any] | None) -> list[Input]:
    """`sequences`, each with its label (when the request sent labels)."""
    if labels is None:
        return sequences
    return [replace(spelled, label=label) for spelled, label in zip(sequences, labels, strict=True)]
