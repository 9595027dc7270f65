"""Stage 3, tokenize: texts and conversations -> the token ids the model reads
(`bundle/formatting.py`, the code training and export encode with): conversations rendered with
the bundle's chat template, truncated by the bundle's policy; or, for a request that asked not
to truncate (or a judge's text, whose rubric is never cut), SequenceTooLongError naming the first
sequence over the model's length.

For a process reward model each response must keep one step token per step that validate.py
found in its text: a step cut off by truncation, or a separator the template or tokenizer did
not keep whole, would otherwise go unscored or be scored at another place without a word.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.bundle.chat import ChatTemplateError
from rewardserve.bundle.judge import TooLongToJudge
from rewardserve.bundle.outputs import Steps, step_positions
from rewardserve.scoring.errors import (
    InvalidStepsError,
    SequenceTooLongError,
    TooManyStepsError,
    UnrenderableChatError,
)
from rewardserve.scoring.retemplate import Texts
from rewardserve.scoring.validate import Inputs


class Tokenize:
    def __init__(self, encoder: SequenceEncoder, steps: Steps | None = None) -> None:
        self.encoder = encoder
        self.steps = steps

    def __call__(self, texts: Texts, inputs: Inputs) -> list[EncodedSequence]:
        try:
            sequences = self.encoder.encode(*texts)
        except TooLongToJudge as error:
            raise SequenceTooLongError(f"{inputs.sequences[error.index].path}: {error}") from None
        except ChatTemplateError as error:
            raise UnrenderableChatError(f"{inputs.sequences[error.index].path}: {error}") from None
        if not inputs.truncate:
            self._refuse_truncated(sequences, inputs)
        if self.steps is not None:
            self._check_steps(sequences, inputs)
        return sequences

    def _check_steps(self, sequences: Sequence[EncodedSequence], inputs: Inputs) -> None:
        assert self.steps is not None
        for sequence, spelled in zip(sequences, inputs.sequences, strict=True):
            if sequence.response_cut:
                raise TooManyStepsError(
                    f"{spelled.path}: the response is over the model's {self.encoder.format.max_length} tokens, "
                    "so its last steps would go unscored; send fewer steps"
                )
            found = len(step_positions(sequence.ids, self.steps.token_id, sequence.response_start))
            expected = len(spelled.steps or ())
            if found != expected:
                raise InvalidStepsError(
                    f"{spelled.path}: {expected} steps end with {self.steps.separator!r} in the text, but the "
                    f"tokenized response holds {found} step tokens (the template or tokenizer changed a separator)"
                )

    def response_tokens(self, sequences: Sequence[EncodedSequence]) -> np.ndarray:
        """Each response's length in tokens, as sent (what truncation cut counts)."""
        suffix = len(self.encoder.format.suffix_ids)
        return np.array([len(s) - s.response_start - suffix + s.response_cut for s in sequences], dtype=np.float64)

    def _refuse_truncated(self, sequences: Sequence[EncodedSequence], inputs: Inputs) -> None:
        limit = self.encoder.format.max_length
        for sequence, spelled in zip(sequences, inputs.sequences, strict=True):
            if sequence.prompt_cut or sequence.response_cut:
                tokens = len(sequence) + sequence.prompt_cut + sequence.response_cut
                raise SequenceTooLongError(
                    f"{spelled.path}: {tokens} tokens, over the model's {limit}; send {inputs.truncated_by} "
                    "to cut the prompt (its earliest turns, then tokens from the left)"
                )
