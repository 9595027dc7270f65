"""Offline scoring: many sequences known up front, scored in length order and answered in theirs
(the other entry point is GraphRunner.score, one padded batch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from rewardserve.bundle.formatting import EncodedSequence
from rewardserve.bundle.outputs import Scores
from rewardserve.bundle.prefix import PrefixRunner, shared_prompts
from rewardserve.bundle.runtime import GraphRunner

# Padded tokens per offline batch. A 0.6B decoder's fused graph holds about 0.55 MB a token while
# it runs (1.2 GB at 2048 tokens, beside 1.9 GB of weights; 32 x 1024 tokens grew it by 8 GB), and
# runs no faster in larger batches: 278 tokens/s at 1024 tokens, 251 at 4096.
OFFLINE_BATCH_TOKENS = 2048


def score_sequences(
    runner: GraphRunner,
    sequences: Sequence[EncodedSequence],
    batch_size: int = 32,
    progress: str | None = None,
    prefix: PrefixRunner | None = None,
) -> Scores:
    """Every output of `sequences` (encoded: `runner.encoder.encode(prompts, responses)`), in their
    order: offline jobs' batching (export's gates, `eval` and `score` in-process). With every
    sequence known, sorting by length and cutting batches of `batch_size` rows (and at most
    OFFLINE_BATCH_TOKENS) leaves almost no padding; the server's MicroBatcher solves the other
    problem, sequences arriving from many clients over time. `progress` labels a progress bar
    (rate and ETA) on stderr. With `prefix` (the runner's prompt and response calls, as
    BundleRuntime's `prefix`), each prompt that several sequences share runs once, and their
    responses after it (bundle/prefix.py); the rest run whole."""
    split = np.array(shared_prompts(sequences) if prefix is not None else [], dtype=np.int64)
    whole = np.setdiff1d(np.arange(len(sequences)), split)
    order = whole[np.argsort([len(sequences[i]) for i in whole], kind="stable")]
    parts = []
    with tqdm(total=len(sequences), desc=progress, unit="seq", disable=progress is None, leave=False) as bar:
        if len(split):
            parts.append(prefix.score_sequences([sequences[i] for i in split], batch_size, bar))
        for rows in token_batches([len(sequences[i]) for i in order], batch_size):
            chunk = order[rows]
            parts.append(runner.score(runner.encoder.pad([sequences[i] for i in chunk])))
            bar.update(len(chunk))
    return Scores.concatenate(parts).take(np.argsort(np.concatenate([split, order]), kind="stable"))


def token_batches(lengths: Sequence[int], max_rows: int, max_tokens: int = OFFLINE_BATCH_TOKENS) -> Iterator[slice]:
    """Consecutive runs of `lengths`, each at most `max_rows` rows and `max_tokens` once padded to
    its longest (a sequence longer than that goes alone)."""
    start = 0
    while start < len(lengths):
        end, width = start + 1, lengths[start]
        while end < len(lengths) and end - start < max_rows:
            width = max(width, lengths[end])
            if width * (end - start + 1) > max_tokens:
                break
            end += 1
        yield slice(start, end)
        start = end
