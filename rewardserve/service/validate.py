"""Stage 1, validate: a request body (already parsed by `schemas.py`) -> the sequences to score.

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

from rewardserve.bundle.chat import Conversation
from rewardserve.bundle.outputs import ModelOutputs, join_steps, step_spans
from rewardserve.service import schemas
from rewardserve.service.errors import (
    InvalidStepsError,
    TextTooLongError,
    TooManyItemsError,
    TooManyObjectivesError,
    TooManyStepsError,
    UnknownObjectiveError,
)

# The K x K matrix of a K-wise /compare is serialized on the event loop: 256 responses take
# ~20 ms and 1.2 MiB of JSON, 1024 would take ~0.3 s (every other request waiting) and 19 MiB.
MAX_PAIRWISE_RESPONSES = 256


@dataclass(frozen=True, slots=True)
class Input:
    """One sequence to score, as the request spelled it: two texts, or the conversation so far
    and the assistant turn(s) to score."""

    prompt: str | Conversation
    response: str | Conversation
    path: str  # the request field its errors name
    # When set, prompt + response is one text in this policy chat format ("auto": detected),
    # which retemplate.py parses into the conversation scored.
    policy_format: str | None = None
    # Process reward models: [start, end) of each step in the response's text.
    steps: list[tuple[int, int]] | None = None


@dataclass(frozen=True, slots=True)
class Inputs:
    """A request's sequences, in the order its rewards are answered."""

    sequences: list[Input]
    items: int  # what the request counts as items (a /compare pair is one item, two sequences)
    truncate: bool = True
    objectives: list[str] | None = None  # the objectives to answer, when the request named them

    def __len__(self) -> int:
        return len(self.sequences)

    @classmethod
    def of_texts(cls, prompts: Sequence[str], responses: Sequence[str], step_separator: str | None = None) -> Inputs:
        """Text sequences, named by position (`[i]`); each response one step when the model reads steps."""
        if step_separator is not None:
            responses = [join_steps([r], step_separator) for r in responses]
        pairs = zip(prompts, responses, strict=True)
        sequences = [
            Input(p, r, f"[{i}]", steps=None if step_separator is None else step_spans(r, step_separator))
            for i, (p, r) in enumerate(pairs)
        ]
        return cls(sequences, items=len(prompts))


def _turns(messages: Sequence[schemas.Message]) -> Conversation:
    return [{"role": m.role, "content": m.content} for m in messages]


def _reply(text: str) -> Conversation:
    return [{"role": "assistant", "content": text}]


class Validate:
    """Each endpoint's body -> Inputs, within `max_items` per request and `max_chars` per text;
    for models with objectives or steps (`outputs`), within `max_objectives` asked for and
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
        self.policy_format = policy_format  # of /get_reward queries that do not name theirs
        self.outputs = outputs or ModelOutputs()
        self.max_steps = max_steps
        self.max_objectives = max_objectives

    @property
    def step_separator(self) -> str | None:
        return None if self.outputs.steps is None else self.outputs.steps.separator

    def __call__(self, body: schemas.ScoringBody) -> Inputs:
        match body:
            case schemas.ScoreRequest():
                sequences = self._score_items(body.items, body.policy_format)
                inputs = Inputs(sequences, len(body.items), body.truncate, self._objectives(body.objectives))
            case schemas.CompareRequest(items=None):
                inputs = Inputs(self._ranked(body), 1, body.truncate)
            case schemas.CompareRequest():
                inputs = Inputs(self._compare_items(body.items), len(body.items), body.truncate)
            case schemas.OpenRLHFRewardRequest():
                inputs = Inputs(self._openrlhf(body), len(body.query))
            case _:
                raise TypeError(f"not a scoring body: {type(body).__name__}")
        if self.step_separator is not None:
            inputs = replace(inputs, sequences=[self._with_steps(spelled) for spelled in inputs.sequences])
        return inputs

    def _objectives(self, names: list[str] | None) -> list[str] | None:
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
        return Input(spelled.prompt, spelled.response, spelled.path, spelled.policy_format, spans)

    def _steps_response(self, path: str, steps: Sequence[str]) -> str:
        """The response text of `steps`: each followed by the model's separator."""
        separator = self.step_separator
        if separator is None:
            raise InvalidStepsError(f"{path}: this model gives no step rewards; send the response as text")
        for j, step in enumerate(steps):
            self._check_text(f"{path}[{j}]", step)
            if separator in step:
                raise InvalidStepsError(f"{path}[{j}]: holds the step separator {separator!r}; send it as two steps")
        return join_steps(steps, separator)

    def _score_items(self, items: Sequence[schemas.ScoreItem], policy_format: str | None) -> list[Input]:
        self._check_count("items", len(items))
        text_format = _text_format(policy_format)
        inputs = []
        for i, item in enumerate(items):
            if item.steps is not None:  # counted with every other response's steps (_with_steps)
                response = self._steps_response(f"items[{i}].steps", item.steps)
                prompt = self._prompt(f"items[{i}].prompt", item.prompt, item.messages, f"items[{i}].messages")
                inputs.append(_answer(prompt, response, f"items[{i}].steps"))
            elif item.messages is None:
                self._check_text(f"items[{i}].prompt", item.prompt)
                self._check_text(f"items[{i}].response", item.response)
                inputs.append(Input(item.prompt, item.response, f"items[{i}]", text_format))
            else:
                self._check_messages(f"items[{i}].messages", item.messages)
                turns = _turns(item.messages)
                inputs.append(Input(turns[:-1], turns[-1:], f"items[{i}].messages"))
        return inputs

    def _compare_items(self, items: Sequence[schemas.CompareItem]) -> list[Input]:
        """Every item's `a`, then every item's `b`."""
        self._check_count("items", len(items))
        prompts: list[str | Conversation] = []
        for i, item in enumerate(items):
            self._check_text(f"items[{i}].a", item.a)
            self._check_text(f"items[{i}].b", item.b)
            prompts.append(self._prompt(f"items[{i}].prompt", item.prompt, item.messages, f"items[{i}].messages"))
        return [
            _answer(prompt, getattr(item, side), f"items[{i}].{side}")
            for side in "ab"
            for i, (item, prompt) in enumerate(zip(items, prompts, strict=True))
        ]

    def _ranked(self, body: schemas.CompareRequest) -> list[Input]:
        """K-wise: each of `responses` after the one prompt."""
        assert body.responses is not None
        self._check_count("responses", len(body.responses))
        k = len(body.responses)
        if body.pairwise and k > MAX_PAIRWISE_RESPONSES:
            raise TooManyItemsError(
                f"responses: {k} responses would answer a {k} x {k} p_better matrix; at most "
                f'{MAX_PAIRWISE_RESPONSES} with "pairwise": true (send false for more)'
            )
        prompt = self._prompt("prompt", body.prompt, body.messages, "messages")
        for j, response in enumerate(body.responses):
            self._check_text(f"responses[{j}]", response)
        return [_answer(prompt, response, f"responses[{j}]") for j, response in enumerate(body.responses)]

    def _openrlhf(self, body: schemas.OpenRLHFRewardRequest) -> list[Input]:
        """Each query as the policy text it is (parsed by retemplate.py); with the "raw" policy
        format, split after its prompt as it is (the whole query is the response without prompts)."""
        self._check_count("query", len(body.query))
        for i, query in enumerate(body.query):
            self._check_text(f"query[{i}]", query)
        text_format = _text_format(body.policy_format or self.policy_format)
        prompts = body.prompts or [""] * len(body.query)
        pairs = enumerate(zip(body.query, prompts, strict=True))
        return [Input(prompt, query[len(prompt) :], f"query[{i}]", text_format) for i, (query, prompt) in pairs]

    def _prompt(
        self, path: str, prompt: str | None, messages: list[schemas.Message] | None, messages_path: str
    ) -> str | Conversation:
        """The text prompt, or the turns of its chat form."""
        if messages is None:
            assert prompt is not None
            self._check_text(path, prompt)
            return prompt
        self._check_messages(messages_path, messages)
        return _turns(messages)

    def _check_count(self, field_name: str, count: int) -> None:
        if count > self.max_items:
            raise TooManyItemsError(
                f"{field_name}: {count} items, at most {self.max_items} per request (max_items_per_request)"
            )

    def _check_messages(self, path: str, messages: Sequence[schemas.Message]) -> None:
        self._check_count(path, len(messages))
        for j, message in enumerate(messages):
            self._check_text(f"{path}[{j}].content", message.content)

    def _check_text(self, path: str, text: str) -> None:
        if len(text) > self.max_chars:
            raise TextTooLongError(f"{path}: {len(text)} characters, at most {self.max_chars} (max_text_chars)")


def _text_format(policy_format: str | None) -> str | None:
    """What Input.policy_format says of text in `policy_format`: None (scored as it is) for raw."""
    return None if policy_format == "raw" else policy_format


def _answer(prompt: str | Conversation, response: str, path: str) -> Input:
    """A candidate response to `prompt`: text after a text prompt, an assistant turn after a conversation."""
    return Input(prompt, response if isinstance(prompt, str) else _reply(response), path)
