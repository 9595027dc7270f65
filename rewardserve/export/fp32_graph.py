"""The fp32 graph: the candidates written while the PyTorch model is in memory (from the
weights for the decoder families decoder_graph.py knows, else traced and fused, then traced
alone), the first that keeps parity with PyTorch, and its prefix graph where it has one and
that keeps parity too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.bundle.manifest import GraphInfo, Parity, PrefixGraph
from rewardserve.bundle.offline import score_sequences
from rewardserve.bundle.prefix import PrefixRunner, splittable
from rewardserve.export import decoder_graph, decoder_writer
from rewardserve.export import graph as graphs
from rewardserve.export.parity import (
    FP32_TOLERANCE,
    PARITY_BATCH_ROWS,
    ParityError,
    TorchRewards,
    export_runner,
    measure_parity,
    parity_problem,
)
from rewardserve.export.source import ExportSource


@dataclass(frozen=True)
class Candidate:
    """An fp32 graph export may ship, if it keeps parity."""

    path: Path
    portable: Path  # the graph OpenVINO reads for bf16: `path` itself unless that has onnxruntime-only attention
    info: GraphInfo
    prefix: Path | None = None  # the same model reading past keys and values (decoder_graph.py), beside `path`
    portable_prefix: Path | None = None  # that in standard operators, for OpenVINO at bf16


@dataclass(frozen=True)
class FP32Graph(Candidate):
    parity: Parity = field(kw_only=True)


def candidates(
    source: ExportSource, encoder: SequenceEncoder, sample: Sequence[EncodedSequence], work: Path, optimize: bool
) -> list[Candidate]:
    """The fp32 graphs to try, most fused first, written while the PyTorch model is in memory:
    written from the weights for the decoder families decoder_graph.py knows; else traced and
    fused by onnxruntime's optimizer, then traced alone. Each records why a more fused one is
    missing."""
    why_not_built = None
    if optimize and source.model_type in decoder_graph.FAMILIES:
        try:
            built = decoder_graph.build(source.model, source.input_format, work / "built", source.outputs, prefix=True)
        except decoder_graph.NotBuildable as exc:
            why_not_built = f"not written from the weights: {exc}"
        else:
            info = GraphInfo(
                opset=decoder_writer.OPSET,
                builder="decoder",
                fused_operators=built.fused_operators,
                fallback=built.why_unfused,
                external_data=True,
            )
            prefix = built.prefix or built.portable_prefix
            return [Candidate(built.graph, built.portable, info, prefix, built.portable_prefix)]
    traced = work / "traced" / graphs.GRAPH_FILE
    traced.parent.mkdir()
    graphs.trace(source, encoder.pad(sample).arrays, traced)

    def unfused(why: str) -> Candidate:
        return Candidate(
            traced, traced, GraphInfo(opset=graphs.OPSET, fallback="; ".join(filter(None, [why_not_built, why])))
        )

    if not optimize:
        return [unfused("optimisation switched off (--no-optimize)")]
    fused = work / "fused" / graphs.GRAPH_FILE
    fused.parent.mkdir()
    try:
        info = graphs.optimize(source, traced, fused)
    except Exception as exc:  # noqa: BLE001 - any optimiser failure means: keep the traced graph
        return [unfused(f"{type(exc).__name__}: {exc}"[:500])]
    # OpenVINO reads onnxruntime's fused encoder operators (LayerNorm, Attention): one graph serves both.
    return [
        Candidate(fused, fused, info.model_copy(update={"fallback": why_not_built})),
        unfused("the fused graph failed parity"),
    ]


def first_within_parity(candidates: Sequence[Candidate], encoder: SequenceEncoder, expected: TorchRewards) -> FP32Graph:
    """The first candidate whose parity with PyTorch holds; the one after a failure says why."""
    problem = None
    for candidate in candidates:
        parity = measure_parity(export_runner(candidate.path, encoder, expected.outputs), expected)
        info = candidate.info
        if problem:
            info = info.model_copy(update={"fallback": f"{info.fallback}: {problem}"})
        if (problem := parity_problem(parity)) is None:
            return FP32Graph(
                candidate.path, candidate.portable, info, candidate.prefix, candidate.portable_prefix, parity=parity
            )
    if candidates[-1].info.builder == "decoder":
        problem += "; export with --no-optimize to trace the model instead"
    raise ParityError(problem)


def checked_prefix(
    fp32: FP32Graph, encoder: SequenceEncoder, expected: TorchRewards
) -> tuple[PrefixGraph | None, str | None]:
    """The fp32 graph's prefix graph, if it reproduces PyTorch as the fp32 graph must: on whole
    sequences (an empty past) and on each response after its prompt's keys and values, every
    prompt run once. One that does not is left out of the bundle, and why is recorded (the
    server then runs every sequence whole). The portable prefix graph, which OpenVINO runs at
    bf16, is checked the same way at fp32, and kept beside it if it holds too."""
    if fp32.prefix is None:
        return None, None
    split = [i for i, s in enumerate(expected.sequences) if splittable(s)]
    if not split:
        return None, "no parity sequence has both a prompt and a response to check it on"
    diffs = _prefix_parity(fp32.prefix, encoder, expected, split)
    worst = max(diffs.values())
    if worst > FP32_TOLERANCE:
        return None, f"it differs from PyTorch by {worst:.3g} (beyond {FP32_TOLERANCE}): {diffs}"
    checked = PrefixGraph(file=fp32.prefix.name, sequences=len(split), max_abs_diff=worst)
    portable = fp32.portable_prefix
    if portable is not None and portable != fp32.prefix:
        portable_worst = max(_prefix_parity(portable, encoder, expected, split).values())
        if portable_worst <= FP32_TOLERANCE:
            checked = checked.model_copy(
                update={"portable_file": portable.name, "portable_max_abs_diff": portable_worst}
            )
    elif portable is not None:
        checked = checked.model_copy(update={"portable_file": portable.name, "portable_max_abs_diff": worst})
    return checked, None


def _prefix_parity(
    graph: Path, encoder: SequenceEncoder, expected: TorchRewards, split: Sequence[int]
) -> dict[str, float]:
    """|output - PyTorch's| at its largest, output by output, over whole sequences and the
    `split` ones scored after their prompts' keys and values (fp32, onnxruntime)."""
    runner = export_runner(graph, encoder, expected.outputs)
    sequences = expected.sequences
    whole = score_sequences(runner, sequences, PARITY_BATCH_ROWS, f"parity: {graph.name}, whole sequences")
    with tqdm(total=len(split), desc=f"parity: {graph.name}, each prompt once", unit="seq", leave=False) as bar:
        pieces = PrefixRunner(runner).score_sequences([sequences[i] for i in split], PARITY_BATCH_ROWS, bar)
    diffs = whole.max_abs_diff(expected.scores)
    for name, diff in pieces.max_abs_diff(expected.scores.take(split)).items():
        diffs[name] = max(diffs[name], diff)
    return diffs
