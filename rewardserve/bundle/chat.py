"""Chat messages -> (prompt, response) text, with a Jinja chat template.

Training renders conversational data here and the server renders chat requests here, with the
template stored in the bundle, so both see the same text.

A conversation splits where the prompt's rendering ends: the prompt is the prompt messages
rendered with the generation prompt (e.g. ``<|im_start|>assistant\\n``), the response is the
rest of the whole conversation's rendering (e.g. ``Sure.<|im_end|>\\n``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache

from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

# For encoder layouts like `[CLS] prompt [SEP] response [SEP]`, with no chat template of their
# own: the prompt is the HH-RLHF transcript ("\n\nHuman: ...\n\nAssistant: ...") and the final
# assistant message is the response, bare, because the separator token marks its turn. This
# reproduces how HH transcripts are split for training, so chat and text requests agree.
PAIR_LAYOUT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.last and m.role == 'assistant' and not add_generation_prompt %}{{ m.content }}"
    "{% else %}{{ '\\n\\n' + {'user': 'Human', 'assistant': 'Assistant'}.get(m.role, m.role | capitalize) + ': ' }}"
    "{{ m.content }}{% endif %}"
    "{% endfor %}"
)


class ChatTemplateError(ValueError):
    """A conversation that the template cannot render or split; `index`: which of a batch."""

    index: int = 0


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: object, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # transformers' `tojson`: no HTML escaping (Jinja's own escapes `<`, `>` and `&`)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}` (assistant-mask markers) renders its body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


@lru_cache(maxsize=8)
def _compile(source: str):
    # transformers' environment for `apply_chat_template` (sandboxed, trim/lstrip blocks, loop
    # controls, `raise_exception`, `tojson`, `strftime_now`, the `generation` tag), so a model's
    # template renders the same text here without transformers. Export checks that it does.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols])
    env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
    env.filters["tojson"] = _tojson
    return env.from_string(source)


# One chat message ({"role", "content"}) and a conversation: the plain data every layer passes
# around (the HTTP API validates its own pydantic `schemas.Message` into these).
Message = Mapping[str, str]
Conversation = Sequence[Message]


def check_messages(messages: object, field: str) -> list[Message]:
    """`messages` as a list of {role, content} string mappings; ChatTemplateError naming `field`."""
    if not isinstance(messages, list) or not messages:
        raise ChatTemplateError(f"{field}: expected a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"{field}[{i}]: expected {{'role': str, 'content': str}}")
    return messages


def render(
    template: str, messages: Sequence[Message], add_generation_prompt: bool, variables: Mapping[str, str] = {}
) -> str:
    """The template's text for `messages`; `variables` are the tokenizer's special tokens
    (`bos_token`, `eos_token`, ...), which transformers passes to every template."""
    try:
        return _compile(template).render(
            **variables, messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt
        )
    except TemplateError as e:
        raise ChatTemplateError(f"chat template: {e}") from e


def split_conversation(
    template: str, prompt: Sequence[Message], response: Sequence[Message], variables: Mapping[str, str] = {}
) -> tuple[str, str]:
    """(prompt text, response text) of a conversation whose last turn(s) `response` are scored."""
    if response[-1]["role"] != "assistant":
        raise ChatTemplateError("the response must end with an assistant message")
    prompt_text = render(template, prompt, True, variables)
    full_text = render(template, [*prompt, *response], False, variables)
    if not full_text.startswith(prompt_text):
        raise ChatTemplateError("the chat template does not render the prompt as a prefix of the conversation")
    return prompt_text, full_text[len(prompt_text) :]


def as_turns(prompt: str | Conversation, response: str | Conversation) -> tuple[Conversation, Conversation]:
    """A text prompt as one user turn and a text response as one assistant turn: how plain
    `prompt`/`response` requests reach a model that reads conversations."""
    prompt_turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    response_turns = [{"role": "assistant", "content": response}] if isinstance(response, str) else response
    return prompt_turns, response_turns


def earlier_turns_dropped(prompt: Conversation) -> Iterator[Conversation]:
    """`prompt` without its oldest exchange, then without the next one, ...: what truncation
    tries before it cuts tokens. System messages at the start stay, and every shorter prompt
    still starts with a user turn (templates that check roles alternate accept it); the last
    user turn is never dropped."""
    system = 0
    while system < len(prompt) and prompt[system]["role"] == "system":
        system += 1
    starts = [i for i in range(system + 1, len(prompt)) if prompt[i]["role"] == "user"]
    for start in starts:
        yield [*prompt[:system], *prompt[start:]]
