"""Parity: the exported graph against the PyTorch model it came from, output by output, on the
same token ids (rewardserve's own encoding). PyTorch scores each parity sequence alone (no
padding to get wrong), once; every graph of the export is compared with that. The model card's
own usage is checked apart (reference.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.bundle.batches import token_batches
from rewardserve.bundle.manifest import Parity, Precision
from rewardserve.bundle.outputs import REWARD, ModelOutputs, Scores, read_outputs
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.export.source import ExportSource

FP32_TOLERANCE = 1e-4  # absolute: fp32 graph vs PyTorch eager
ALONE_SEQUENCES = 64  # graphs score up to these one at a time too (padding absent), a quarter of all at most
PARITY_BATCH_ROWS = 32


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model's rewards."""


def export_runner(
    graph: Path, encoder: SequenceEncoder, outputs: ModelOutputs, precision: Precision = "fp32"
) -> GraphRunner:
    """A session for export's offline passes: without onnxruntime's arena, so that the memory of
    its longest batch goes back between batches (session_options)."""
    return GraphRunner(graph, encoder, outputs=outputs, precision=precision, arena=False)


@torch.inference_mode()
def torch_scores(source: ExportSource, encoder: SequenceEncoder, sequences: Sequence[EncodedSequence]) -> Scores:
    """Every output of the PyTorch model on `sequences`, read as the graph's are."""
    batch = encoder.pad(sequences)
    inputs = (torch.from_numpy(batch.arrays[n]).to(source.device) for n in source.input_format.input_names)
    values = source.reward(*inputs)
    values = values if isinstance(values, tuple) else (values,)
    named = {n: v.float().cpu().numpy() for n, v in zip(source.outputs.graph_outputs(), values, strict=True)}
    return read_outputs(source.outputs, named, batch.arrays["input_ids"], batch.response_starts)


def torch_rewards(source: ExportSource, encoder: SequenceEncoder, sequences: Sequence[EncodedSequence]) -> np.ndarray:
    return torch_scores(source, encoder, sequences).rewards


@dataclass(frozen=True)
class TorchRewards:
    """PyTorch's outputs on each parity sequence, scored alone (no padding to get wrong): what
    every graph of the export is compared with, computed once; and what those outputs are."""

    sequences: Sequence[EncodedSequence]
    scores: Scores
    outputs: ModelOutputs

    @property
    def rewards(self) -> np.ndarray:
        return self.scores.rewards


def torch_reference(
    source: ExportSource, encoder: SequenceEncoder, sequences: Sequence[EncodedSequence]
) -> TorchRewards:
    alone = [
        torch_scores(source, encoder, [s]) for s in tqdm(sequences, desc="parity: PyTorch", unit="seq", leave=False)
    ]
    return TorchRewards(sequences, Scores.concatenate(alone), source.outputs)


def measure_parity(runner: GraphRunner, expected: TorchRewards) -> Parity:
    """Compare the graph's outputs in padded batches of mixed lengths, and (for the first
    ALONE_SEQUENCES) alone, with PyTorch's; and the graph's alone and batched ones."""
    encoder, sequences = runner.encoder, expected.sequences
    alone = sequences[: min(ALONE_SEQUENCES, len(sequences) // 4)]
    label = f"parity: {runner.graph.stem} {runner.precision} against PyTorch"
    with tqdm(total=len(sequences) + len(alone), desc=label, unit="seq", leave=False) as bar:
        batched = []
        # In arrival order, as the server batches: mixed lengths, padding present.
        for rows in token_batches([len(s) for s in sequences], PARITY_BATCH_ROWS):
            batched.append(runner.score(encoder.pad(sequences[rows])))
            bar.update(len(batched[-1]))
        each = []
        for sequence in alone:
            each.append(runner.score(encoder.pad([sequence])))
            bar.update(1)
    onnx_batched, onnx_alone = Scores.concatenate(batched), Scores.concatenate(each)
    truth = expected.scores
    rows = np.arange(len(alone))
    by_output = onnx_batched.max_abs_diff(truth)
    for name, diff in onnx_alone.max_abs_diff(truth.take(rows)).items():
        by_output[name] = max(by_output[name], diff)
    max_abs = max(by_output.values())
    return Parity(
        sequences=len(sequences),
        max_abs_diff=max_abs,
        max_rel_diff=by_output[REWARD] / max(float(np.abs(truth.rewards).max()), 1e-12),
        max_abs_diff_alone_vs_batched=max(onnx_alone.max_abs_diff(onnx_batched.take(rows)).values()),
        by_output=by_output if len(by_output) > 1 else {},
    )


def parity_problem(parity: Parity) -> str | None:
    """What is wrong with the fp32 graph's `parity`, or None. Reduced precisions are judged by
    the agreement gate instead (and fp16 by a relative bound too)."""
    if max(parity.max_abs_diff, parity.max_abs_diff_alone_vs_batched) > FP32_TOLERANCE:
        return f"fp32 graph differs from PyTorch beyond {FP32_TOLERANCE} (absolute): {parity}"
    return None
