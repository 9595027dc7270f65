"""Turn (prompt, response) pairs into the exact token ids the reward model was trained on.

This is the only place where input formatting is decided. Training builds its batches here,
export checks parity on batches built here and the server encodes requests here, so there is
no train/serve skew in special tokens, truncation side or padding.

A sequence is laid out as::

    prefix_ids + prompt_ids + separator_ids + response_ids + suffix_ids

e.g. ``[CLS] prompt [SEP] response [SEP]`` for BERT-style encoders, with token type 0 up to
and including the separator and 1 after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from tokenizers import Tokenizer

from rewardserve.bundle.chat import PAIR_LAYOUT_TEMPLATE


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
    """

    ids: np.ndarray
    response_start: int
    prompt_cut: int = 0
    response_cut: int = 0

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EncodedBatch:
    """A padded batch, as numpy int64 arrays keyed by model input name."""

    arrays: dict[str, np.ndarray]


class SequenceEncoder:
    """Encodes (prompt, response) texts into sequences with a `tokenizers.Tokenizer` and an `InputFormat`."""

    def __init__(self, tokenizer: Tokenizer, fmt: InputFormat) -> None:
        if fmt.max_length - fmt.special_length <= fmt.min_prompt_tokens:
            raise ValueError("max_length leaves no room for a response after min_prompt_tokens")
        # The tokenizer file may carry its own truncation/padding settings; ours are the
        # InputFormat's, applied below, so the file's are switched off.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        # Text that spells a special token ("[SEP]", "<|endoftext|>") is tokenized as text:
        # user input must never inject separators into the layout.
        tokenizer.encode_special_tokens = True
        self.tokenizer = tokenizer
        self.format = fmt

    @classmethod
    def from_file(cls, path: str | Path, fmt: InputFormat) -> SequenceEncoder:
        return cls(Tokenizer.from_file(str(path)), fmt)

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[EncodedSequence]:
        """Each (prompt, response)'s token ids, unpadded, truncated by the format's policy."""
        if len(prompts) != len(responses):
            raise ValueError("prompts and responses must have the same length")
        fmt = self.format
        prompt_encodings = self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)
        response_encodings = self.tokenizer.encode_batch(list(responses), add_special_tokens=False)
        budget = fmt.max_length - fmt.special_length
        sequences = []
        for p_enc, r_enc in zip(prompt_encodings, response_encodings, strict=True):
            p, r = p_enc.ids, r_enc.ids
            r_kept = r[: budget - min(len(p), fmt.min_prompt_tokens)]
            p_kept = p[max(0, len(p) + len(r_kept) - budget) :]
            head = [*fmt.prefix_ids, *p_kept, *fmt.separator_ids]
            ids = np.array([*head, *r_kept, *fmt.suffix_ids], dtype=np.int64)
            sequences.append(EncodedSequence(ids, len(head), len(p) - len(p_kept), len(r) - len(r_kept)))
        return sequences

    def pad(self, sequences: Sequence[EncodedSequence]) -> EncodedBatch:
        """Pad sequences to the longest one, on the format's side, and build the model's inputs."""
        fmt = self.format
        width = max(len(sequence) for sequence in sequences)
        shape = (len(sequences), width)
        input_ids = np.full(shape, fmt.pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        position_ids = np.zeros(shape, dtype=np.int64)
        for row, sequence in enumerate(sequences):
            start = width - len(sequence) if fmt.padding_side == "left" else 0
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
        return EncodedBatch(arrays)

    def encode_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> EncodedBatch:
        return self.pad(self.encode(prompts, responses))
