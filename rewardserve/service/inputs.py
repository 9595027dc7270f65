"""Request bodies -> the sequences to score: (prompt, response) texts, or conversations that the
bundle's chat template renders into them, each with the field path its errors name.

Size limits are checked here, on the event loop, before anything is admitted. Rendering costs
about 0.1 ms a conversation, so it runs later, on the tokenizer thread (`Pairs.texts`): a
1024-item chat request would otherwise hold the event loop for a tenth of a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rewardserve.bundle.chat import ChatTemplateError, split_conversation
from rewardserve.service.errors import TextTooLongError, TooManyItemsError, UnrenderableChatError
from rewardserve.service.schemas import CompareItem, CompareRequest, Message, OpenRLHFRewardRequest, ScoreItem
from rewardserve.service.settings import Settings

Turns = list[dict[str, str]]

# The K x K matrix of a K-wise /compare is serialized on the event loop: 256 responses take
# ~20 ms and 1.2 MiB of JSON, 1024 would take ~0.3 s (every other request waiting) and 19 MiB.
MAX_PAIRWISE_RESPONSES = 256


@dataclass
class Pairs:
    """The sequences of one request, in order. A sequence is either two texts, or a
    conversation: prompt turns and the response turn(s), rendered by `texts`."""

    chat_template: str
    prompts: list[str | Turns] = field(default_factory=list)
    responses: list[str | Turns] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @classmethod
    def of_texts(cls, prompts: Sequence[str], responses: Sequence[str]) -> Pairs:
        """Text pairs, named by position (`[i]`)."""
        pairs = cls(chat_template="")
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            pairs.add(prompt, response, f"[{i}]")
        return pairs

    def add(self, prompt: str | Turns, response: str | Turns, path: str) -> None:
        self.prompts.append(prompt)
        self.responses.append(response)
        self.paths.append(path)

    def __len__(self) -> int:
        return len(self.paths)

    def where(self, index: int) -> str:
        return self.paths[index]

    def texts(self) -> tuple[list[str], list[str]]:
        """(prompts, responses) as text; UnrenderableChatError naming the sequence's field."""
        prompts, responses = [], []
        for prompt, response, path in zip(self.prompts, self.responses, self.paths, strict=True):
            if not isinstance(prompt, str):
                try:
                    prompt, response = split_conversation(self.chat_template, prompt, response)
                except ChatTemplateError as error:
                    raise UnrenderableChatError(f"{path}: {error}") from None
            prompts.append(prompt)
            responses.append(response)
        return prompts, responses


def _turns(messages: Iterable[Message]) -> Turns:
    return [{"role": m.role, "content": m.content} for m in messages]


def _reply(text: str) -> Turns:
    return [{"role": "assistant", "content": text}]


class RequestInputs:
    """Turns each endpoint's body into Pairs, checking `max_items_per_request` and `max_text_chars`."""

    def __init__(self, settings: Settings, chat_template: str) -> None:
        self.max_items = settings.max_items_per_request
        self.max_chars = settings.max_text_chars
        self.chat_template = chat_template

    def score(self, items: Sequence[ScoreItem]) -> Pairs:
        self._check_count("items", len(items))
        pairs = Pairs(self.chat_template)
        for i, item in enumerate(items):
            if item.messages is None:
                self._check_text(f"items[{i}].prompt", item.prompt)
                self._check_text(f"items[{i}].response", item.response)
                pairs.add(item.prompt, item.response, f"items[{i}]")
            else:
                self._check_messages(f"items[{i}].messages", item.messages)
                turns = _turns(item.messages)
                pairs.add(turns[:-1], turns[-1:], f"items[{i}].messages")
        return pairs

    def compare(self, items: Sequence[CompareItem]) -> Pairs:
        """Every item's `a`, then every item's `b`."""
        self._check_count("items", len(items))
        prompts: list[str | Turns] = []
        for i, item in enumerate(items):
            self._check_text(f"items[{i}].a", item.a)
            self._check_text(f"items[{i}].b", item.b)
            prompts.append(self._prompt(f"items[{i}].prompt", item.prompt, item.messages, f"items[{i}].messages"))
        pairs = Pairs(self.chat_template)
        for side in "ab":
            for i, (item, prompt) in enumerate(zip(items, prompts, strict=True)):
                response = getattr(item, side)
                pairs.add(prompt, response if isinstance(prompt, str) else _reply(response), f"items[{i}].{side}")
        return pairs

    def ranking(self, body: CompareRequest) -> Pairs:
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
        pairs = Pairs(self.chat_template)
        for k, response in enumerate(body.responses):
            path = f"responses[{k}]"
            self._check_text(path, response)
            pairs.add(prompt, response if isinstance(prompt, str) else _reply(response), path)
        return pairs

    def openrlhf(self, body: OpenRLHFRewardRequest) -> Pairs:
        """Each query split after its prompt (the whole query is the response without prompts)."""
        self._check_count("query", len(body.query))
        for i, query in enumerate(body.query):
            self._check_text(f"query[{i}]", query)
        pairs = Pairs(self.chat_template)
        prompts = body.prompts or [""] * len(body.query)
        for i, (query, prompt) in enumerate(zip(body.query, prompts, strict=True)):
            pairs.add(prompt, query[len(prompt) :], f"query[{i}]")
        return pairs

    def _prompt(self, path: str, prompt: str | None, messages: list[Message] | None, messages_path: str) -> str | Turns:
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

    def _check_messages(self, path: str, messages: Sequence[Message]) -> None:
        self._check_count(path, len(messages))
        for j, message in enumerate(messages):
            self._check_text(f"{path}[{j}].content", message.content)

    def _check_text(self, path: str, text: str) -> None:
        if len(text) > self.max_chars:
            raise TextTooLongError(f"{path}: {len(text)} characters, at most {self.max_chars} (max_text_chars)")
