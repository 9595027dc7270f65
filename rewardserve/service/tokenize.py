"""Stage 3, tokenize: texts -> the token ids the model was trained on (`bundle/formatting.py`,
the code training and export encode with), truncated by the bundle's policy; or, for a request
that asked not to truncate, SequenceTooLongError naming the first sequence over the model's length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.service.errors import SequenceTooLongError
from rewardserve.service.render import Texts
from rewardserve.service.validate import Inputs


class Tokenize:
    def __init__(self, encoder: SequenceEncoder) -> None:
        self.encoder = encoder

    def __call__(self, texts: Texts, inputs: Inputs) -> list[EncodedSequence]:
        sequences = self.encoder.encode(*texts)
        if not inputs.truncate:
            self._refuse_truncated(sequences, inputs)
        return sequences

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
                    f'{spelled.path}: {tokens} tokens, over the model\'s {limit}; send "truncate": true '
                    "to cut the prompt from the left"
                )
