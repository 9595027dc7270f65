"""A judge's verdict tokens and the rule that makes a reward of their distribution.

The graph answers the verdict tokens' logits at the answer position only: the LM head's rows
for those tokens, never the whole vocabulary (export/decoder_writer.py). Every rule here reads
the tokens' log-probabilities up to one constant per row, so the logits serve as they are: the
softmax over the whole vocabulary that the model card computes shifts each row's logits by its
log-partition, which each rule cancels (yes/no's and pairwise's difference) or renormalises away (rating).
Export checks the served reward against that full softmax (export/reference.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from rewardserve.bundle.judge import pairwise, rating, yes_no

RULES: dict[str, ModuleType] = {rule.NAME: rule for rule in (yes_no, rating, pairwise)}
Rule = Literal["yes_no", "rating", "pairwise"]


class Verdict(BaseModel):
    """What the judge's answer is read as: stored in the bundle's outputs."""

    rule: Rule
    labels: list[str] = Field(description="Each verdict's name, e.g. ['yes', 'no'], ['1', ..., '10'] or ['A', 'B'].")
    tokens: list[str] = Field(description="Each verdict's text as it follows the answer prefix, e.g. ' Yes'.")
    token_ids: list[int] = Field(description="Each verdict's one token, as export found it in context.")
    values: list[float] | None = Field(None, description="The rating rule: each verdict's score.")

    @model_validator(mode="after")
    def _complete(self) -> Verdict:
        if not len(self.labels) == len(self.tokens) == len(self.token_ids):
            raise ValueError("verdicts: one label, token text and token id each")
        if len(set(self.token_ids)) != len(self.token_ids):
            raise ValueError(f"verdicts: two verdicts are the same token ({self.token_ids})")
        RULES[self.rule].check(self.labels, self.values)
        return self

    def read(self, log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rewards, probabilities over the verdict tokens) of (rows, K) log-probabilities or logits."""
        log_probs = np.asarray(log_probs, dtype=np.float64)
        values = None if self.values is None else np.asarray(self.values, dtype=np.float64)
        rewards = RULES[self.rule].reward(log_probs, values)
        shifted = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
        return rewards.astype(np.float32), (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)

    def describe(self) -> str:
        rule = RULES[self.rule].DESCRIPTION.format(self.labels[0], self.labels[-1])
        tokens = ", ".join(
            f"{label} = {text!r} (id {i})"
            for label, text, i in zip(self.labels, self.tokens, self.token_ids, strict=True)
        )
        return f"judge ({self.rule}): reward = {rule}; verdict tokens {tokens}"
