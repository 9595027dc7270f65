"""Chat messages -> (prompt, response) text, with a Jinja chat template.

Training renders conversational data here and the server renders chat requests here, with the
template stored in the bundle, so both see the same text.

A conversation splits where the prompt's rendering ends: the prompt is the prompt messages
rendered with the generation prompt (e.g. ``<|im_start|>assistant\\n``), the response is the
rest of the whole conversation's rendering (e.g. ``Sure.<|im_end|>\\n``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from jinja2.exceptions import TemplateError
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
    """A conversation that the template cannot render or split."""


def _raise(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(source: str):
    # The HF convention (sandboxed, trim/lstrip blocks, `raise_exception`), so templates written
    # for transformers' `apply_chat_template` render the same here without transformers.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
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


def render(template: str, messages: Sequence[Message], add_generation_prompt: bool) -> str:
    try:
        return _compile(template).render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt
        )
    except TemplateError as e:
        raise ChatTemplateError(f"chat template: {e}") from e


def split_conversation(template: str, prompt: Sequence[Message], response: Sequence[Message]) -> tuple[str, str]:
    """(prompt text, response text) of a conversation whose last turn(s) `response` are scored."""
    if response[-1]["role"] != "assistant":
        raise ChatTemplateError("the response must end with an assistant message")
    prompt_text = render(template, prompt, add_generation_prompt=True)
    full_text = render(template, [*prompt, *response], add_generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise ChatTemplateError("the chat template does not render the prompt as a prefix of the conversation")
    return prompt_text, full_text[len(prompt_text) :]
