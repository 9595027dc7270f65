"""Responses scored against their prompt's keys and values, the prompt run once: a decoder
bundle's prefix graph (export/decoder_graph.py, Part "prefix"; Manifest.prefix).

In a causal decoder the keys and values at a prompt's tokens do not depend on what follows
them. So G responses to one prompt (a GRPO group, a /compare of K responses) need the prompt's
P tokens run once, not G times: `prompt_states` runs the prompt with an empty past and keeps
every layer's keys and values; `score_responses` runs the responses with those as their past.
The rewards are the whole sequences' (export measures it against PyTorch: Manifest.prefix).

The split point is each sequence's own `response_start`, in the ids of the whole sequence
tokenized in one piece: a prompt's states are keyed by exactly those ids, so a response is
never read after a prompt it did not have, whatever truncation or the template did. Which
sequences split at all is decided here (`runs_whole`), for the server's batcher
(scoring/shared_prompts.py) and for offline jobs (`shared_prompts`, offline.score_sequences).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from rewardserve.bundle.batches import token_batches
from rewardserve.bundle.formatting import EncodedSequence, SequenceEncoder
from rewardserve.bundle.outputs import ModelOutputs, Scores, read_outputs
from rewardserve.bundle.past import PAST, PREFIX_LENGTHS, PRESENT, EmptyPast


class PrefixGraphSession(Protocol):
    """What the prompt and response calls need of a runner (runtime.GraphRunner) on a prefix
    graph: named here, so that this module needs nothing of the runner's."""

    graph: Path
    encoder: SequenceEncoder
    outputs: ModelOutputs
    session: Any  # onnxruntime.InferenceSession or OpenVinoSession
    empty_past: EmptyPast | None  # what the graph reads beside a batch scored whole
    length_bucket: int  # the padding rule (SequenceEncoder.pad's multiple)
    response_bucket: int  # the same for responses read after a prompt
    splits_every_prompt: bool  # whether a lone prompt's sequence is split too (see score_whole)


# Prompts shorter than this run whole with their responses: split, a pair of responses after a
# 64-token prompt ran 1.12x faster than whole, after a 32-token one 0.92x (benchmarks/prefix_engine.py).
MIN_PROMPT_TOKENS = 64
# Most bytes of a prompt's keys and values one offline call copies into its rows (the server's
# bound is PREFIX_CACHE_MB): a 0.6B Qwen3's 1,000-token prompt holds 224 MiB at fp32, so 4 rows a
# call where every row holds a copy (onnxruntime); at bf16 one layer's copy is 4 MiB, so 256 rows
# where each row holds one layer's (OpenVINO).
OFFLINE_COPY_BYTES = 2**30


@dataclass(frozen=True, slots=True, eq=False)
class PromptStates:
    """One prompt's keys and values at every layer, as the prefix graph answered them."""

    length: int
    # per past input, in the graph's order: (1, kv_heads, length, head_dim); fp32, or bf16 bits in
    # uint16 under OpenVINO at bf16 (bundle/openvino_session.py)
    arrays: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


def prompt_ids(sequence: EncodedSequence) -> np.ndarray:
    """The tokens a sequence's response is read after: its prompt, as the whole sequence was tokenized."""
    return sequence.ids[: sequence.response_start]


def splittable(sequence: EncodedSequence) -> bool:
    """Whether a sequence has a prompt and a response to score apart."""
    return 0 < sequence.response_start < len(sequence)


def runs_whole(sequence: EncodedSequence, min_prompt_tokens: int = MIN_PROMPT_TOKENS) -> str | None:
    """Why `sequence` is scored whole rather than after its prompt's keys and values, or None:
    - no_prompt_or_response: nothing to split;
    - merged_at_join: the tokenizer merged a token across the join between prompt and response,
      so its prompt's tokens are not the prompt's own;
    - short_prompt: under `min_prompt_tokens`, not worth a second call."""
    if not splittable(sequence):
        return "no_prompt_or_response"
    if sequence.merged_at_join:
        return "merged_at_join"
    if sequence.response_start < min_prompt_tokens:
        return "short_prompt"
    return None


def by_prompt(sequences: Sequence[EncodedSequence], indices: Iterable[int]) -> list[list[int]]:
    """`indices` grouped by their sequences' prompt ids, groups in order of first appearance."""
    groups: dict[bytes, list[int]] = {}
    for index in indices:
        groups.setdefault(prompt_ids(sequences[index]).tobytes(), []).append(index)
    return list(groups.values())


def shared_prompts(
    sequences: Sequence[EncodedSequence], min_prompt_tokens: int = MIN_PROMPT_TOKENS, lone: bool = False
) -> list[int]:
    """Indices of the sequences that may run after a prompt another of them shares (`runs_whole`
    says the rest run whole): offline jobs, with every sequence known, split only those; with
    `lone`, those of a prompt no other sequence has too (as `score_whole` splits kept rows)."""
    splits = (i for i, sequence in enumerate(sequences) if runs_whole(sequence, min_prompt_tokens) is None)
    return sorted(i for group in by_prompt(sequences, splits) if lone or len(group) > 1 for i in group)


class PrefixRunner:
    """The prompt and response calls on a GraphRunner whose graph is a prefix graph (its session
    is the runner's, so a reopened session serves both). Not thread-safe for concurrent calls,
    as GraphRunner: the server's engine thread owns it."""

    def __init__(self, runner: PrefixGraphSession) -> None:
        if runner.empty_past is None:
            raise ValueError(f"{runner.graph.name} reads no past keys and values: not a prefix graph")
        self.runner = runner
        self.whole = runner.empty_past
        self.past_names = list(self.whole.shapes)
        self.present_names = [PRESENT + name.removeprefix(PAST) for name in self.past_names]
        _, kv_heads, _, head_dim = self.whole.shapes[self.past_names[0]]
        # What one prompt token's keys and values hold, over every layer (fp32, or bf16 under OpenVINO).
        self.bytes_per_token = self.whole.dtype.itemsize * kv_heads * head_dim * len(self.past_names)
        # Whether one copy of a prompt's keys and values serves every row of a response call
        # (OpenVINO broadcasts it inside the graph, layer by layer: openvino_session._past_broadcast),
        # or each row needs its own (onnxruntime's GroupQueryAttention reads the past row by row).
        self.broadcasts = bool(getattr(runner.session, "broadcasts_past", False))
        layers = len(self.past_names) // 2
        # What each response row holds of a prompt token's keys and values while its call runs:
        # every layer's where rows are copies, one layer's where the engine broadcasts them.
        self.row_bytes_per_token = self.bytes_per_token // layers if self.broadcasts else self.bytes_per_token

    def prompt_states(self, ids: np.ndarray) -> PromptStates:
        """Every layer's keys and values of one prompt's token ids: it runs as a whole sequence,
        padded as the runner pads every call (length_bucket), so that they are the same numbers
        whichever caller asks."""
        n = len(ids)
        feeds = self.whole(self.runner.encoder.pad([EncodedSequence(ids, 0)], self.runner.length_bucket).arrays)
        arrays = self.runner.session.run(self.present_names, feeds)
        return PromptStates(n, tuple(a if a.shape[2] == n else np.ascontiguousarray(a[:, :, :n]) for a in arrays))

    def score_whole(
        self, sequences: Sequence[EncodedSequence], keep: Sequence[bool], multiple: int = 1
    ) -> tuple[Scores, list[PromptStates | None]]:
        """Every output of whole sequences in one call (an empty past), and, for each row whose
        `keep` is set, its prompt's keys and values read off the same call: in a causal decoder
        a sequence's first `response_start` keys and values are its prompt's. A prompt nobody
        else has yet runs once this way, not as a call of its own, and is kept for a sibling.
        `multiple`: the padding rule (SequenceEncoder.pad).

        Where the engine's kernels round a sequence run whole differently from the same sequence
        run after its prompt (`splits_every_prompt`: OpenVINO's bf16 and w8a8, unless export
        measured the two alike), a kept row is scored after its prompt instead, so that its
        reward is the one its siblings' path gives: the first sample of a GRPO group sent one a
        request, and the rest, read alike."""
        if self.runner.splits_every_prompt and any(keep):
            return self._split_kept(sequences, keep, multiple)
        batch = self.runner.encoder.pad(sequences, multiple)
        feeds = self.whole(batch.arrays)
        names = self.runner.outputs.graph_outputs()
        wanted = names + (self.present_names if any(keep) else [])
        answers = dict(zip(wanted, self.runner.session.run(wanted, feeds), strict=True))
        scores = read_outputs(self.runner.outputs, answers, batch.arrays["input_ids"], batch.response_starts)
        kept: list[PromptStates | None] = []
        for row, (sequence, wanted_row) in enumerate(zip(sequences, keep, strict=True)):
            if not wanted_row:
                kept.append(None)
                continue
            end = sequence.response_start
            # Copies: a view would hold the whole batch's arrays while the prompt is kept.
            arrays = tuple(np.ascontiguousarray(answers[name][row : row + 1, :, :end]) for name in self.present_names)
            kept.append(PromptStates(end, arrays))
        return scores, kept

    def _split_kept(
        self, sequences: Sequence[EncodedSequence], keep: Sequence[bool], multiple: int
    ) -> tuple[Scores, list[PromptStates | None]]:
        """score_whole's answer with every kept row run as its prompt, then its response after it
        (`multiple` pads the rest, run whole)."""
        whole = [i for i, wanted in enumerate(keep) if not wanted]
        parts = [self.score_whole([sequences[i] for i in whole], [False] * len(whole), multiple)[0]] if whole else []
        kept: list[PromptStates | None] = [None] * len(sequences)
        split = [i for i, wanted in enumerate(keep) if wanted]
        for i in split:
            kept[i] = states = self.prompt_states(prompt_ids(sequences[i]))
            parts.append(self.score_responses(states, [sequences[i].ids[states.length :]]))
        return Scores.concatenate(parts).take(np.argsort(whole + split, kind="stable")), kept

    def score_responses(
        self, states: PromptStates, responses: Sequence[np.ndarray], multiple: int | None = None
    ) -> Scores:
        """Every output of `responses` (the token ids after one prompt), each read after `states`:
        in one call, right-padded to a multiple of `multiple` (default: the runner's
        response_bucket, as served), the prompt's keys and values fed once where the engine
        broadcasts them to the rows, else one copy a row."""
        multiple = multiple or self.runner.response_bucket
        rows = len(responses)
        copies = 1 if self.broadcasts else rows
        feeds = {
            name: array if copies == 1 else np.repeat(array, copies, axis=0)
            for name, array in zip(self.past_names, states.arrays, strict=True)
        }
        # Padded as any batch of this bundle is (on the right: decoders written from weights pad so).
        padded = self.runner.encoder.pad([EncodedSequence(response, 0) for response in responses], multiple).arrays
        ids = padded["input_ids"]
        feeds |= {"input_ids": ids, "attention_mask": padded["attention_mask"]}
        feeds |= {PREFIX_LENGTHS: np.full(rows, states.length, np.int64)}
        names = self.runner.outputs.graph_outputs()
        named = dict(zip(names, self.runner.session.run(names, feeds), strict=True))
        return read_outputs(self.runner.outputs, named, ids, np.zeros(rows, np.int64))

    def score_sequences(
        self, sequences: Sequence[EncodedSequence], batch_size: int = 32, bar: tqdm | None = None
    ) -> Scores:
        """Every output of whole sequences, in their order, each prompt run once and its responses
        after it, in length order, up to `batch_size` a call and as many as OFFLINE_COPY_BYTES
        of copies of the prompt's keys and values allow. Every sequence must be `splittable`.
        How export checks this graph against PyTorch, and offline jobs score shared prompts.
        `bar` counts the sequences done."""
        for index, sequence in enumerate(sequences):
            if not splittable(sequence):
                raise ValueError(f"sequence {index} has no prompt or no response to score apart")
        multiple = self.runner.response_bucket  # as the server pads responses (SequenceEncoder.pad)
        parts, order = [], []
        for indices in by_prompt(sequences, range(len(sequences))):
            states = self.prompt_states(prompt_ids(sequences[indices[0]]))
            indices = sorted(indices, key=lambda i: len(sequences[i]))
            per_call = max(1, min(batch_size, OFFLINE_COPY_BYTES // (states.length * self.row_bytes_per_token)))
            lengths = [len(sequences[i]) - states.length for i in indices]
            for rows in token_batches(lengths, per_call, max_tokens=sys.maxsize, multiple=multiple):
                chosen = indices[rows]
                responses = [sequences[i].ids[states.length :] for i in chosen]
                parts.append(self.score_responses(states, responses, multiple))
                order += chosen
                if bar is not None:
                    bar.update(len(chosen))
        return Scores.concatenate(parts).take(np.argsort(order, kind="stable"))
