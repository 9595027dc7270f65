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
    padding_side: Literal["right"] = "right"
    token_type_ids: bool = Field(description="Whether the model takes BERT-style segment ids (0: prompt, 1: response).")

    @property
    def special_length(self) -> int:
        return len(self.prefix_ids) + len(self.separator_ids) + len(self.suffix_ids)

    @property
    def input_names(self) -> list[str]:
        names = ["input_ids", "attention_mask"]
        return [*names, "token_type_ids"] if self.token_type_ids else names


@dataclass(frozen=True)
class EncodedPair:
    """One formatted sequence, unpadded; tokens from `response_start` on are the response's."""

    ids: np.ndarray
    response_start: int

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EncodedBatch:
    """A padded batch, as numpy int64 arrays keyed by model input name."""

    arrays: dict[str, np.ndarray]


class PairEncoder:
    """Encodes (prompt, response) pairs with a `tokenizers.Tokenizer` and an `InputFormat`."""

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
    def from_file(cls, path: str | Path, fmt: InputFormat) -> PairEncoder:
        return cls(Tokenizer.from_file(str(path)), fmt)

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[EncodedPair]:
        """Each pair's token ids, unpadded, truncated by the format's policy."""
        if len(prompts) != len(responses):
            raise ValueError("prompts and responses must have the same length")
        fmt = self.format
        prompt_encodings = self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)
        response_encodings = self.tokenizer.encode_batch(list(responses), add_special_tokens=False)
        budget = fmt.max_length - fmt.special_length
        pairs = []
        for p_enc, r_enc in zip(prompt_encodings, response_encodings, strict=True):
            p, r = p_enc.ids, r_enc.ids
            r = r[: budget - min(len(p), fmt.min_prompt_tokens)]
            if len(p) + len(r) > budget:
                p = p[len(p) + len(r) - budget :]
            head = [*fmt.prefix_ids, *p, *fmt.separator_ids]
            ids = np.array([*head, *r, *fmt.suffix_ids], dtype=np.int64)
            pairs.append(EncodedPair(ids, response_start=len(head)))
        return pairs

    def pad(self, pairs: Sequence[EncodedPair]) -> EncodedBatch:
        """Right-pad sequences to the longest one and build the model's input arrays."""
        fmt = self.format
        width = max(len(pair) for pair in pairs)
        shape = (len(pairs), width)
        input_ids = np.full(shape, fmt.pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        for row, pair in enumerate(pairs):
            input_ids[row, : len(pair)] = pair.ids
            attention_mask[row, : len(pair)] = 1
            token_type_ids[row, pair.response_start : len(pair)] = 1
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        if fmt.token_type_ids:
            arrays["token_type_ids"] = token_type_ids
        return EncodedBatch(arrays)

    def encode_batch(self, prompts: Sequence[str], responses: Sequence[str]) -> EncodedBatch:
        return self.pad(self.encode(prompts, responses))
