"""What a pairwise judge reads (`bundle/judge/pairwise.py`): two candidates to one prompt in one
text, and K candidates as every ordered pair. `/compare` and the in-process scorer both ask for
these texts, so a judge ranks the same responses the same way through either."""

from __future__ import annotations

from collections.abc import Sequence

from rewardserve.bundle.judge import ResponsePair, pairwise
from rewardserve.scoring.validate import Input


def read_together(first: Input, second: Input, path: str) -> Input:
    """Two candidates to one prompt as a pairwise judge reads them, `first` in its first slot."""
    return Input(first.prompt, ResponsePair(first.response, second.response), path)


def every_ordered_pair(candidates: Sequence[Input], field: str = "responses") -> list[Input]:
    """The K(K - 1) texts of K candidates, in `pairwise.ordered_pairs` order: what
    `pairwise.preference_matrix` reads their rewards in."""
    return [
        read_together(candidates[i], candidates[j], f"{field}[{i}] and {field}[{j}]")
        for i, j in pairwise.ordered_pairs(len(candidates))
    ]
