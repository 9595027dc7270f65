"""Real HH-RLHF (prompt, response) items for load tests: every distinct pair, in a seeded shuffle."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from rewardserve.bundle import SequenceEncoder
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import load_preferences

Item = dict[str, str]


def hh_items(
    encoder: SequenceEncoder, max_tokens: int, paths: Sequence[Path] | None = None, seed: int = 0
) -> list[Item]:
    """Distinct HH items whose untruncated formatted length is at most `max_tokens`.

    Distinct, so that the server's duplicate cache answers nothing the raw engine must compute.
    """
    examples, _ = load_preferences(paths or default_data_files(), split="all")
    pairs = sorted({(e.prompt, r) for e in examples for r in e.responses})
    random.Random(seed).shuffle(pairs)
    encoded = encoder.encode([p for p, _ in pairs], [r for _, r in pairs])
    return [
        {"prompt": p, "response": r}
        for (p, r), seq in zip(pairs, encoded, strict=True)
        if len(seq) + seq.prompt_cut + seq.response_cut <= max_tokens
    ]
