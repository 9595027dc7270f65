"""Turn (prompt, response) pairs into the exact token ids the reward model reads.

This is the only place where input formatting is decided. Training builds its batches here,
export checks parity (and the model's reference usage) on batches built here and the server
encodes requests here, so there is no train/serve skew in special tokens, truncation or padding.

A prompt and a response are each text or chat messages. Two layouts:

- ``pair``: ``prefix_ids + prompt_ids + separator_ids + response_ids + suffix_ids``. Around a
  separator, prompt and response are tokenized apart, e.g. ``[CLS] prompt [SEP] response [SEP]``
  for BERT-style encoders (token type 0 up to and including the separator, 1 after it). Without
  one, ``[BOS] prompt response [EOS]`` for decoders, the text ``prompt + response`` is tokenized
  in one piece, as the model reads it. Messages are first rendered to (prompt, response) text
  with the format's template.
- ``chat``: how chat reward models are used on their model cards,
  ``model(tokenizer.apply_chat_template(conversation)).logits[0][0]``: the whole conversation
  rendered with the model's template and tokenized in one piece (the template's special tokens
  parsed as special tokens, nothing added), the reward read at its last token. Text is one user
  turn and one assistant turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field
from tokenizers import Tokenizer

from rewardserve.bundle.chat import (
    PAIR_LAYOUT_TEMPLATE,
    ChatTemplateError,
    Conversation,
    as_turns,
    earlier_turns_dropped,
    split_conversation,
)
from rewardserve.bundle.judge import JudgeTemplate, TooLongToJudge, judge_text

Text = str | Conversation  # a prompt or a response: text, or chat messages


class InputFormat(BaseModel):
    """How a pair becomes token ids; stored in the bundle manifest."""

    prefix_ids: list[int] = Field(description="Special tokens before the prompt, e.g. [CLS].")
    separator_ids: list[int] = Field(description="Special tokens between prompt and response.")
    suffix_ids: list[int] = Field(description="Special tokens after the response, e.g. [SEP].")
    pad_id: int
    max_length: int = Field(gt=8, description="Maximum tokens per sequence, special tokens included.")
    truncation: Literal["prompt_left"] = Field(
        "prompt_left",
        description=(
            "Rewards depend on the response: over-long inputs lose the start of the prompt first. "
            "Only when the response alone does not fit beside min_prompt_tokens of prompt is the "
            "response cut from its end."
        ),
    )
    min_prompt_tokens: int = Field(
        64, ge=0, description="Prompt tokens (its tail) kept even when the response is over-long."
    )
    padding_side: Literal["right", "left"] = Field(
        "right", description="Rewards do not depend on it: the pooled position is the last real token either way."
    )
    token_type_ids: bool = Field(description="Whether the model takes BERT-style segment ids (0: prompt, 1: response).")
    position_ids: bool = Field(
        False,
        description="Whether position ids are passed: decoders need them so left padding does not shift positions.",
    )
    chat_template: str = Field(PAIR_LAYOUT_TEMPLATE, description="Jinja template that renders chat messages.")
    layout: Literal["pair", "chat"] = Field(
        "pair",
        description=(
            "pair: prompt and response between the special ids above (tokenized apart around a separator, "
            "joined without one); chat: the whole "
            "conversation rendered with chat_template and tokenized in one piece (prefix, separator and "
            "suffix empty), as the model card's apply_chat_template does."
        ),
    )
    template_variables: dict[str, str] = Field(
        default_factory=dict, description="What the template reads besides messages: the tokenizer's special tokens."
    )
    judge: JudgeTemplate | None = Field(
        None,
        description="chat layout only: the conversation is written into this judge's rubric, the rubric rendered "
        "with chat_template; the reward is read at the end of the judge's text, where its verdict comes next.",
    )

    @property
    def special_length(self) -> int:
        return len(self.prefix_ids) + len(self.separator_ids) + len(self.suffix_ids)

    @property
    def input_names(self) -> list[str]:
        names = ["input_ids", "attention_mask"]
        if self.token_type_ids:
            names.append("token_type_ids")
        if self.position_ids:
            names.append("position_ids")
        return names


@dataclass(frozen=True)
class EncodedSequence:
    """One formatted sequence, unpadded; tokens from `response_start` on are the response's.

    `prompt_cut` and `response_cut` count the tokens truncation removed, so loaders can report them.
    `merged_at_join`: the response's first token holds the prompt's last characters too (the
    tokenizer merged across the join), so the prompt's own tokens end before it.
    """

    ids: np.ndarray
    response_start: int
    prompt_cut: int = 0
    response_cut: int = 0
    merged_at_join: bool = False

    def __len__(self) -> int:
        return len(self.ids)


T = TypeVar("T")


def _each(pairs: Sequence[tuple[Text, Text]], encode: Callable[[Text, Text], T]) -> list[T]:
    """`encode` of every pair; a ChatTemplateError says which pair (`index`)."""
    results = []
    for index, pair in enumerate(pairs):
        try:
            results.append(encode(*pair))
        except ChatTemplateError as error:
            error.index = index
            raise
    return results


def _first_token_past(offsets: Sequence[tuple[int, int]], boundary: int) -> tuple[int, bool]:
    """The index of the first token that holds a character at or after `boundary`: where the
    response starts in a prompt and response tokenized together (a token merged across the
    boundary counts as the response's: the reward never depends on this split); and whether it
    was merged so."""
    for index, (begin, end) in enumerate(offsets):
        if end > boundary:
            return index, begin < boundary
    return len(offsets), False


@dataclass(frozen=True)
class EncodedBatch:
    """A padded batch, as numpy int64 arrays keyed by model input name, and the column where
    each row's response starts (step rewards are read from there on)."""

    arrays: dict[str, np.ndarray]
    response_starts: np.ndarray | None = None


class SequenceEncoder:
    """Encodes (prompt, response) texts into sequences with a `tokenizers.Tokenizer` and an `InputFormat`."""

    def __init__(self, tokenizer: Tokenizer, fmt: InputFormat) -> None:
        if fmt.max_length - fmt.special_length <= fmt.min_prompt_tokens:
            raise ValueError("max_length leaves no room for a response after min_prompt_tokens")
        # The tokenizer file may carry its own truncation/padding settings; ours are the
        # InputFormat's, applied below, so the file's are switched off.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        # pair: text that spells a special token ("[SEP]", "<|endoftext|>") is tokenized as text,
        # so user input never injects separators into the layout. chat: the rendering's special
        # tokens are parsed, as transformers' apply_chat_template parses them.
        tokenizer.encode_special_tokens = fmt.layout == "pair"
        self.tokenizer = tokenizer
        self.format = fmt

    @classmethod
    def from_file(cls, path: str | Path, fmt: InputFormat) -> SequenceEncoder:
        return cls(Tokenizer.from_file(str(path)), fmt)

    def encode(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[EncodedSequence]:
        """Each (prompt, response)'s token ids, unpadded, truncated by the format's policy.
        ChatTemplateError when a conversation cannot be rendered."""
        if len(prompts) != len(responses):
            raise ValueError("prompts and responses must have the same length")
        pairs = list(zip(prompts, responses, strict=True))
        if self.format.layout == "chat":
            return _each(pairs, lambda prompt, response: self._fitted_conversation(*as_turns(prompt, response)))
        texts = _each(pairs, self._texts)
        return self._encode_pairs([p for p, _ in texts], [r for _, r in texts])

    def _texts(self, prompt: Text, response: Text) -> tuple[str, str]:
        if isinstance(prompt, str) and isinstance(response, str):
            return prompt, response
        fmt = self.format
        return split_conversation(fmt.chat_template, *as_turns(prompt, response), fmt.template_variables)

    def _encode_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> list[EncodedSequence]:
        fmt = self.format
        budget = fmt.max_length - fmt.special_length
        sequences = []
        for p, r, merged in self._token_pairs(prompts, responses):
            r_kept = r[: budget - min(len(p), fmt.min_prompt_tokens)]
            p_kept = p[max(0, len(p) + len(r_kept) - budget) :]
            head = [*fmt.prefix_ids, *p_kept, *fmt.separator_ids]
            ids = np.array([*head, *r_kept, *fmt.suffix_ids], dtype=np.int64)
            cuts = (len(p) - len(p_kept), len(r) - len(r_kept))
            sequences.append(EncodedSequence(ids, len(head), *cuts, merged_at_join=merged))
        return sequences

    def _token_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[list[int], list[int], bool]]:
        """(prompt ids, response ids, merged across the join) of each pair. Between separator
        tokens (encoders) prompt and response are tokenized apart. Without one (decoders) they
        are tokenized joined, as the model reads `prompt + response`: a token that merges across
        the join (`?` + `"` -> `?"`) is the response's first."""
        if self.format.separator_ids:
            prompt_encodings = self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)
            response_encodings = self.tokenizer.encode_batch(list(responses), add_special_tokens=False)
            return [(p.ids, r.ids, False) for p, r in zip(prompt_encodings, response_encodings, strict=True)]
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        joined = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        pairs = []
        for prompt, encoding in zip(prompts, joined, strict=True):
            start, merged = _first_token_past(encoding.offsets, len(prompt))
            pairs.append((encoding.ids[:start], encoding.ids[start:], merged))
        return pairs

    def _fitted_conversation(self, prompt: Conversation, response: Conversation) -> EncodedSequence:
        """A conversation within max_length: as it is; else without its earliest exchanges, as
        few as it takes; else (one exchange still too long) cut by tokens, except a judge's,
        which TooLongToJudge refuses."""
        full = self._conversation(prompt, response)
        if len(full) <= self.format.max_length:
            return full
        sequence = full
        for shorter in earlier_turns_dropped(prompt):
            candidate = self._conversation(shorter, response)
            sequence = dataclasses.replace(candidate, prompt_cut=len(full) - len(candidate))
            if len(sequence) <= self.format.max_length:
                return sequence
        if self.format.judge is not None:
            raise TooLongToJudge(
                f"the judge's text is {len(sequence)} tokens (earliest turns dropped, where there were any), over "
                f"the model's {self.format.max_length}; a judge's rubric and response are never cut"
            )
        return self._cut(sequence)

    def _conversation(self, prompt: Conversation, response: Conversation) -> EncodedSequence:
        fmt = self.format
        if fmt.judge is not None:
            prompt_text, response_text = judge_text(
                fmt.judge, fmt.chat_template, fmt.template_variables, prompt, response
            )
        else:
            prompt_text, response_text = split_conversation(fmt.chat_template, prompt, response, fmt.template_variables)
        encoding = self.tokenizer.encode(prompt_text + response_text, add_special_tokens=False)
        start, merged = _first_token_past(encoding.offsets, len(prompt_text))
        return EncodedSequence(np.array(encoding.ids, dtype=np.int64), start, merged_at_join=merged)

    def _cut(self, sequence: EncodedSequence) -> EncodedSequence:
        """One exchange over max_length, cut as pair layouts are: the prompt from the left (after
        its first token, the BOS of templates that have one), down to min_prompt_tokens; then the
        response before its last token, where the reward is read."""
        fmt = self.format
        ids, start = sequence.ids, sequence.response_start
        prompt, response = ids[1:start], ids[start:]
        budget = fmt.max_length - 1
        keep_response = budget - min(len(prompt), fmt.min_prompt_tokens)
        kept_response = (
            response
            if len(response) <= keep_response
            else np.concatenate([response[: keep_response - 1], response[-1:]])
        )
        kept_prompt = prompt[max(0, len(prompt) + len(kept_response) - budget) :]
        return EncodedSequence(
            np.concatenate([ids[:1], kept_prompt, kept_response]),
            1 + len(kept_prompt),
            sequence.prompt_cut + len(prompt) - len(kept_prompt),
            len(response) - len(kept_response),
            sequence.merged_at_join,
        )

    def pad(self, sequences: Sequence[EncodedSequence], multiple: int = 1) -> EncodedBatch:
        """Pad sequences to the longest one, on the format's side, and build the model's inputs.
        With `multiple`, the padded length is rounded up to a multiple of it (at most max_length):
        a server that batches only sequences of the same multiple pads each one to a length of
        its own, whoever its batch-mates are (scoring/batcher.py, LENGTH_BUCKET)."""
        fmt = self.format
        width = max(len(sequence) for sequence in sequences)
        width = max(width, min(-(-width // multiple) * multiple, fmt.max_length))
        shape = (len(sequences), width)
        input_ids = np.full(shape, fmt.pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        position_ids = np.zeros(shape, dtype=np.int64)
        response_starts = np.zeros(len(sequences), dtype=np.int64)
        for row, sequence in enumerate(sequences):
            start = width - len(sequence) if fmt.padding_side == "left" else 0
            response_starts[row] = start + sequence.response_start
            real = slice(start, start + len(sequence))
            input_ids[row, real] = sequence.ids
            attention_mask[row, real] = 1
            token_type_ids[row, start + sequence.response_start : real.stop] = 1
            position_ids[row, real] = np.arange(len(sequence))
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        if fmt.token_type_ids:
            arrays["token_type_ids"] = token_type_ids
        if fmt.position_ids:
            arrays["position_ids"] = position_ids
        return EncodedBatch(arrays, response_starts)

    def encode_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> EncodedBatch:
        return self.pad(self.encode(prompts, responses))
