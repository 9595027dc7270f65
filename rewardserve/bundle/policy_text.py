"""A policy's chat-formatted text -> the chat messages it spells: re-templating's first half.

RL trainers send what the policy saw and wrote, decoded with its special tokens
(OpenRLHF: ``tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=False)``), in the
policy's chat format, which is rarely the reward model's. Parsed back to messages, the
conversation is rendered with the reward model's own template (`formatting.py`), so the reward
is the one the model gives the conversation in its own format.

Each format names the markers that identify it; `parse` detects the format when it is not
given. What decoding leaves around the turns (BOS, EOS, pad, a trailing end-of-turn) is dropped,
and so is the empty ``<think></think>`` block a thinking model's template puts before an answer
when thinking is off. Text that no format parses is a PolicyTextError: never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rewardserve.bundle.chat import Message

# BOS, EOS and pad tokens of the families below: what decoding with special tokens leaves around turns
LEFTOVERS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|endoftext|>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<|dummy_85|>",  # Phi-4's pad
    "<bos>",
    "<eos>",
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
)
_EMPTY_THINKING = re.compile(r"^<think>\s*</think>\s*")
_ROLE = r"([a-z_]+)"


class PolicyTextError(ValueError):
    """Text that the policy format asked for (or any known format) does not parse."""


@dataclass(frozen=True)
class _Turns:
    """A format whose turns open with a header that names the role and close with `end`."""

    header: re.Pattern[str]  # group 1: the role
    end: str  # the end-of-turn marker
    strip: bool  # whether the format's template trims contents (so they are read back trimmed)
    roles: dict[str, str]  # the format's role names -> user/assistant/system

    def __call__(self, text: str) -> list[Message]:
        headers = list(self.header.finditer(text))
        if not headers or text[: headers[0].start()].strip():
            raise PolicyTextError("no turn starts the text")
        messages = []
        for header, following in zip(headers, [*headers[1:], None], strict=True):
            turn = text[header.end() : following.start() if following else len(text)].rstrip("\n")
            if following and not turn.endswith(self.end):
                raise PolicyTextError(f"a {header.group(1)} turn does not end with {self.end}")
            role = self.roles.get(header.group(1), header.group(1))
            messages.append(_message(role, turn.removesuffix(self.end), self.strip))
        return messages


def _message(role: str, content: str, strip: bool) -> Message:
    if role == "assistant":
        content = _EMPTY_THINKING.sub("", content)
    return {"role": role, "content": content.strip() if strip else content}


# Llama 3.1-3.3 templates open every conversation's system turn with these lines, whether or not
# it has a system message: the template's, not the conversation's
_LLAMA31_PREAMBLE = re.compile(
    r"^(?:Environment: ipython\n)?Cutting Knowledge Date: [^\n]*\nToday Date: [^\n]*(?:\n\n|$)"
)


def _llama3(text: str) -> list[Message]:
    """``<|start_header_id|>user<|end_header_id|>\n\nuser<|eot_id|>``: Llama 3.x."""
    messages = _Turns(re.compile(rf"<\|start_header_id\|>{_ROLE}<\|end_header_id\|>\n\n"), "<|eot_id|>", True, {})(text)
    if messages[0]["role"] == "system":
        system = _LLAMA31_PREAMBLE.sub("", messages[0]["content"])
        messages[0:1] = [{"role": "system", "content": system}] if system else []
    return messages


def _llama2(text: str) -> list[Message]:
    """``[INST] <<SYS>>\\nsystem\\n<</SYS>>\\n\\nuser [/INST] assistant </s>``: Llama 2, Mistral."""
    parts = re.split(r"\[INST\]|\[/INST\]", text)
    if len(parts) < 3 or parts[0].strip():
        raise PolicyTextError("no [INST] ... [/INST] turn starts the text")
    messages: list[Message] = []
    for i, part in enumerate(_without_leftovers(part) for part in parts[1:]):
        if i % 2 == 0:
            if system := re.match(r"<<SYS>>\n(.*?)\n<</SYS>>\n\n", part, re.DOTALL):
                messages.append({"role": "system", "content": system.group(1).strip()})
                part = part[system.end() :]
            messages.append({"role": "user", "content": part.strip()})
        else:
            messages.append({"role": "assistant", "content": part.strip()})
    return messages


def _deepseek(text: str) -> list[Message]:
    """``system<｜User｜>user<｜Assistant｜>assistant<｜end▁of▁sentence｜>``: DeepSeek V2/V3/R1."""
    parts = re.split(r"(<｜User｜>|<｜Assistant｜>)", text)
    messages: list[Message] = []
    if parts[0].strip():
        messages.append({"role": "system", "content": parts[0]})
    for marker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if marker == "<｜User｜>" else "assistant"
        messages.append(_message(role, content.removesuffix("<｜end▁of▁sentence｜>"), strip=False))
    if not messages or messages[0]["role"] == "assistant":
        raise PolicyTextError("no <｜User｜> turn in the text")
    return messages


def _hh(text: str) -> list[Message]:
    """``\\n\\nHuman: user\\n\\nAssistant: assistant``: Anthropic HH-RLHF transcripts."""
    parts = re.split(r"(?:^|\n\n)(Human|Assistant):", text)
    if len(parts) < 3 or parts[0].strip():
        raise PolicyTextError("no Human: turn starts the text")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2], strict=True)]


FORMATS: dict[str, tuple[str, Callable[[str], list[Message]]]] = {
    # name: (a marker only this format's text has, the parser); detection tries them in order
    "llama3": ("<|start_header_id|>", _llama3),
    "phi4": ("<|im_sep|>", _Turns(re.compile(rf"<\|im_start\|>{_ROLE}<\|im_sep\|>"), "<|im_end|>", False, {})),
    "chatml": ("<|im_start|>", _Turns(re.compile(rf"<\|im_start\|>{_ROLE}\n"), "<|im_end|>", False, {})),
    "gemma": (
        "<start_of_turn>",
        _Turns(re.compile(rf"<start_of_turn>{_ROLE}\n"), "<end_of_turn>", True, {"model": "assistant"}),
    ),
    "phi3": ("<|end|>", _Turns(re.compile(r"<\|(system|user|assistant)\|>\n?"), "<|end|>", False, {})),
    "deepseek": ("<｜User｜>", _deepseek),
    "llama2": ("[/INST]", _llama2),
    "hh": ("Human:", _hh),
}
POLICY_FORMATS = tuple(FORMATS)


def detect(text: str) -> str | None:
    """The first format whose marker the text has."""
    return next((name for name, (marker, _) in FORMATS.items() if marker in text), None)


def parse(text: str, policy_format: str = "auto") -> list[Message]:
    """The messages `text` spells in `policy_format` ("auto": the detected format)."""
    name = detect(text) if policy_format == "auto" else policy_format
    if name is None:
        raise PolicyTextError(f"no known chat format ({', '.join(POLICY_FORMATS)}) parses it")
    if name not in FORMATS:
        raise PolicyTextError(f"{name!r} is not a policy format ({', '.join(POLICY_FORMATS)})")
    try:
        return FORMATS[name][1](_without_leftovers(text))
    except PolicyTextError as error:
        raise PolicyTextError(f"not {name} text: {error}") from None


def _without_leftovers(text: str) -> str:
    """`text` without BOS/EOS/pad tokens (and whitespace) around it."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip()
        for token in LEFTOVERS:
            text = text.removeprefix(token).removesuffix(token)
    return text
