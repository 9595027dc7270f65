"""Offline scoring: many sequences known up front, scored in length order and answered in theirs
(the other entry point is GraphRunner.score, one padded batch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from rewardserve.bundle.batches import token_batches
from rewardserve.bundle.formatting import EncodedSequence
from rewardserve.bundle.outputs import Scores
from rewardserve.bundle.prefix import PrefixRunner, shared_prompts
from rewardserve.bundle.runtime import GraphRunner


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
    lone = runner.splits_every_prompt  # as the server's engine scores a lone prompt's sequence
    split = np.array(shared_prompts(sequences, lone=lone) if prefix is not None else [], dtype=np.int64)
    whole = np.setdiff1d(np.arange(len(sequences)), split)
    order = whole[np.argsort([len(sequences[i]) for i in whole], kind="stable")]
    multiple = runner.length_bucket  # as the server pads: a reward does not depend on its batch-mates
    parts = []
    with tqdm(total=len(sequences), desc=progress, unit="seq", disable=progress is None, leave=False) as bar:
        if len(split):
            parts.append(prefix.score_sequences([sequences[i] for i in split], batch_size, bar))
        for rows in token_batches([len(sequences[i]) for i in order], batch_size, multiple=multiple):
            chunk = order[rows]
            parts.append(runner.score(runner.encoder.pad([sequences[i] for i in chunk], multiple)))
            bar.update(len(chunk))
    return Scores.concatenate(parts).take(np.argsort(np.concatenate([split, order]), kind="stable"))
