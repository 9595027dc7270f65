"""Checkpoint -> verified ONNX bundle.

The steps, each checked before the next builds on it:

1. while the PyTorch model is loaded: its reward of each parity sequence, the model card's
   rewards for the reference check (`reference.py`), and the fp32 graph candidates, written
   from the weights for the decoder families `decoder_graph.py` knows, else traced and fused
   with onnxruntime's transformer optimizer (and traced alone, as a fallback); then the model
   leaves memory;
2. the first candidate that keeps parity with PyTorch is the fp32 graph;
3. check it against the model's reference usage, the ids and rewards its own transformers code
   gives;
4. put each reduced precision asked for (int8, int4, bf16, fp16) through the agreement gate
   against the fp32 graph, and measure its parity against PyTorch (`precision.py`); those that
   pass ship beside the fp32 graph as variants, and the server picks one per machine;
5. fit what calibration asks for, and write the bundle, moved into place only once complete.

A model with more than one output (objectives, step rewards: bundle/outputs.py) is checked on
every one of them, in parity and in the reference check. A process reward model reads held-out
responses cut into steps (`stepped`), each step ending with its separator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from tqdm import tqdm

from rewardserve.bundle import EncodedSequence, Manifest, SequenceEncoder, save_bundle
from rewardserve.bundle.engine_choice import Machine, RequestedPrecision
from rewardserve.bundle.manifest import GraphInfo, Parity, Precision, PrefixGraph, PrefixVariant, Variant
from rewardserve.bundle.outputs import REWARD, ModelOutputs, Scores, join_steps, read_outputs
from rewardserve.bundle.prefix import PrefixRunner, splittable
from rewardserve.bundle.runtime import GraphRunner, scores_of_sequences, token_batches
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.metrics import fit_temperature
from rewardserve.export import decoder_graph
from rewardserve.export import graph as graphs
from rewardserve.export import precision as reduced
from rewardserve.export.gaps import (
    example_inputs,
    example_rewards,
    gaps_of,
    model_prompt,
    response_count,
    reward_gaps,
)
from rewardserve.export.reference import check_reference, model_card_rewards
from rewardserve.export.source import ExportSource, OutputOptions, load_source
from rewardserve.training.checkpoint import TOKENIZER_FILE

FP32_TOLERANCE = 1e-4  # absolute: fp32 graph vs PyTorch eager
MIN_PARITY_SEQUENCES = 64
# Above this many parameters a model scores a few sequences a second on a CPU: a 0.6B decoder
# took 23 minutes over every held-out response. Its passes then take samples (docs/train-export.md).
LARGE_MODEL_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class PassSizes:
    """How much held-out data each export pass takes; None: all that it is given."""

    parity_sequences: int | None = None
    reference_conversations: int | None = None
    gate_examples: int | None = None
    statistics_examples: int | None = None

    def for_model(self, parameters: int) -> PassSizes:
        """These sizes, with the defaults for a model of `parameters` where none was asked for."""
        default = LARGE_MODEL_PASSES if parameters > LARGE_MODEL_PARAMETERS else PassSizes()
        return PassSizes(**{f.name: getattr(self, f.name) or getattr(default, f.name) for f in fields(self)})


LARGE_MODEL_PASSES = PassSizes(
    parity_sequences=64, reference_conversations=64, gate_examples=256, statistics_examples=128
)


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model's rewards."""


def export_bundle(
    checkpoint: Path,
    out: Path,
    parity_pairs: Sequence[tuple[str, str]],
    heldout: Sequence[PreferenceExample] = (),
    *,
    name: str | None = None,
    precision: RequestedPrecision = "fp32",
    optimize: bool = True,
    max_length: int | None = None,
    padding_side: Literal["right", "left"] | None = None,
    calibration: Sequence[PreferenceExample] = (),
    provenance: dict | None = None,
    machine: Machine | None = None,
    sizes: PassSizes = PassSizes(),
    output_options: OutputOptions | None = None,
) -> Manifest:
    """Export `checkpoint` into the bundle directory `out`.

    `parity_pairs` are the (prompt, response) texts parity is measured on; `heldout` the
    preference pairs a reduced precision must keep agreeing on (and where reward statistics are
    measured when training left none); `calibration`, when given, the pairs the temperature is
    fitted on. A reduced `precision` named (int8, bf16, fp16) must pass its gate or the export
    fails; `auto` gates every one this machine can measure and ships those that pass. `sizes`
    caps how much of `parity_pairs` and `heldout` each pass takes (by default all of it for
    models up to LARGE_MODEL_PARAMETERS, samples above). `output_options` say what export cannot
    read off a model with several outputs (source.OutputOptions).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    machine = machine or Machine.this()
    targets, not_gated = reduced.targets(precision, machine)
    source = load_source(checkpoint, max_length, padding_side, output_options or OutputOptions())
    sizes = sizes.for_model(source.parameters)
    encoder = SequenceEncoder(source.tokenizer, source.input_format)
    if (steps := source.outputs.steps) is not None:
        parity_pairs = [(p, stepped(r, steps.separator)) for p, r in parity_pairs]
        heldout = [_stepped_example(e, steps.separator) for e in heldout]
    inputs = [(model_prompt(source.input_format, p), r) for p, r in parity_pairs]
    parity_inputs = inputs[: sizes.parity_sequences]
    sequences = encoder.encode([p for p, _ in parity_inputs], [r for _, r in parity_inputs])
    if steps is not None:  # a step cut off by truncation would be missing on both sides, unnoticed
        sequences = [s for s in sequences if not s.response_cut]
    if len(sequences) < MIN_PARITY_SEQUENCES:
        raise ValueError(f"parity needs at least {MIN_PARITY_SEQUENCES} sequences, got {len(sequences)}")
    if targets and not heldout:
        raise ValueError(f"--precision {precision} needs held-out preference pairs for its agreement gate")

    record = {**source.training, **(provenance or {}), "export": None}
    with _staged(out) as staging:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-graphs-") as scratch:
            # PyTorch's side first: its rewards, the model card's, and the graphs written from (or
            # traced through) the model. Then the model leaves memory to the sessions that score them.
            more = example_inputs(source.input_format, heldout)
            with source.on_gpu():
                expected = torch_reference(source, encoder, sequences)
                card = model_card_rewards(checkpoint, source, encoder, [*inputs, *more], sizes.reference_conversations)
            candidates = _candidates(source, encoder, sequences[:2], Path(scratch), optimize)
            source.forget_model()
            fp32 = _first_within_parity(candidates, encoder, expected)
            prefix, prefix_left_out = _checked_prefix(fp32, encoder, expected)
            runner = _runner(fp32.path, encoder, source.outputs)
            reference = check_reference(runner, card)
            gated = heldout[: sizes.gate_examples] if targets else []
            measured = heldout[: sizes.statistics_examples] if "reward_mean" not in source.stats else []
            # Both are prefixes of heldout: one fp32 scoring serves the gate and the statistics.
            fp32_rewards = example_rewards(runner, max(gated, measured, key=len), "held-out rewards: fp32")
            fp32_gaps = gaps_of(gated, fp32_rewards)
            statistics = _reward_statistics(source, runner, fp32_rewards[: response_count(measured)], calibration)
            del runner  # one session at a time: each variant's opens once the fp32 one has closed
            # A decoder's bf16 graph is its prefix graph, which scores whole sequences too.
            has_prefix = prefix is not None and prefix.portable_file is not None
            bf16_from = fp32.path.with_name(prefix.portable_file) if has_prefix else fp32.portable
            variants = _variants(
                fp32.path,
                bf16_from,
                encoder,
                targets,
                precision == "auto",
                gated,
                fp32_gaps,
                expected,
                staging,
                machine,
            )
            external = graphs.data_file(fp32.path).exists()
            graphs.move(fp32.path, staging)
            for file in (prefix.file, prefix.portable_file) if prefix is not None else ():
                if file and file != fp32.path.name:
                    graphs.move(fp32.path.with_name(file), staging)  # they read fp32's data file
            if has_prefix and "bf16" in variants and variants["bf16"].passed:
                bf16_graph = staging / (variants["bf16"].file or bf16_from.name)
                prefix = _judged_prefix(prefix, bf16_graph, encoder, gated, fp32_gaps, source.outputs)
        source.tokenizer.save(str(staging / TOKENIZER_FILE))
        record["export"] = _export_record(checkpoint, precision, not_gated) | {"pass_sizes": asdict(sizes)}
        manifest = Manifest(
            name=name or checkpoint.name,
            input_format=source.input_format,
            outputs=source.outputs,
            graph=fp32.info.model_copy(update={"external_data": external, "prefix_left_out": prefix_left_out}),
            parity=fp32.parity,
            prefix=prefix,
            reference=reference,
            variants=variants,
            **statistics,
            provenance=record,
        )
        return save_bundle(staging, manifest)


def stepped(response: str, separator: str) -> str:
    """A held-out response as a process reward model reads one: cut into steps at line breaks
    and sentence ends, each step followed by the separator (a response of one sentence is one step)."""
    steps = [step for step in re.split(r"\n+|(?<=[.!?])\s+", response.strip()) if step.strip()]
    return join_steps(steps or [response], separator)


def _stepped_example(example: PreferenceExample, separator: str) -> PreferenceExample:
    responses = tuple(stepped(r, separator) for r in example.responses)
    messages = example.response_messages and tuple(
        [*turns[:-1], {**turns[-1], "content": stepped(turns[-1]["content"], separator)}]
        for turns in example.response_messages
    )
    return dataclasses.replace(example, responses=responses, response_messages=messages)


def _variants(
    fp32: Path,
    portable: Path,
    encoder: SequenceEncoder,
    targets: Sequence[Precision],
    keep_refused: bool,
    heldout: Sequence[PreferenceExample],
    fp32_gaps: np.ndarray,
    expected: TorchRewards,
    staging: Path,
    machine: Machine,
) -> dict[Precision, Variant]:
    """Each target precision judged against the fp32 graph `fp32`: on held-out pairs (the
    agreement gate) and against PyTorch (parity). Passed variants' graphs are moved into
    `staging`. A refusal raises PrecisionRefused, or is recorded when `keep_refused` (auto).
    `portable` is the graph OpenVINO runs at bf16."""
    variants: dict[Precision, Variant] = {}
    for precision in targets:
        variant = _judged(precision, fp32, portable, encoder, heldout, fp32_gaps, expected, machine)
        if variant.refused and not keep_refused:
            raise reduced.PrecisionRefused(precision, variant.agreement, variant.refused)
        if variant.file:
            graphs.move(fp32.with_name(variant.file), staging)
        variants[precision] = variant
    return variants


def _judged(
    precision: Precision,
    fp32: Path,
    portable: Path,
    encoder: SequenceEncoder,
    heldout: Sequence[PreferenceExample],
    fp32_gaps: np.ndarray,
    expected: TorchRewards,
    machine: Machine,
) -> Variant:
    """One precision's variant, judged in a session that closes when this returns (so that no
    two variants' sessions are in memory at once)."""
    runner = _runner(reduced.derive(fp32, portable, precision), encoder, expected.outputs, precision)
    gate = reduced.agreement(fp32_gaps, reward_gaps(runner, heldout, f"agreement gate: {precision}"))
    refused = None if reduced.passes(gate) else str(reduced.PrecisionRefused(precision, gate))
    parity = None if refused else measure_parity(runner, expected)
    if parity and precision == "fp16" and parity.max_rel_diff > reduced.FP16_TOLERANCE:
        refused = f"fp16 refused: it differs from PyTorch fp32 beyond {reduced.FP16_TOLERANCE} (relative): {parity}"
    own_graph = not refused and runner.graph != fp32  # bf16 may run the fp32 graph itself
    return Variant(
        passed=refused is None,
        file=runner.graph.name if own_graph else None,
        agreement=gate,
        parity=parity,
        refused=refused,
        measured_on=machine.describe(),
    )


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A new directory beside `out`, moved into its place once the block has written it, so that
    `out` is never a half-written bundle."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-export-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is read by other users (containers)
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _runner(graph: Path, encoder: SequenceEncoder, outputs: ModelOutputs, precision: Precision = "fp32") -> GraphRunner:
    """A session for export's offline passes: without onnxruntime's arena, so that the memory of
    its longest batch goes back between batches (session_options)."""
    return GraphRunner(graph, encoder, outputs=outputs, precision=precision, arena=False)


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


def _candidates(
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
                opset=decoder_graph.OPSET,
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


def _first_within_parity(
    candidates: Sequence[Candidate], encoder: SequenceEncoder, expected: TorchRewards
) -> FP32Graph:
    """The first candidate whose parity with PyTorch holds; the one after a failure says why."""
    problem = None
    for candidate in candidates:
        parity = measure_parity(_runner(candidate.path, encoder, expected.outputs), expected)
        info = candidate.info
        if problem:
            info = info.model_copy(update={"fallback": f"{info.fallback}: {problem}"})
        if (problem := _parity_problem(parity)) is None:
            return FP32Graph(
                candidate.path, candidate.portable, info, candidate.prefix, candidate.portable_prefix, parity=parity
            )
    if candidates[-1].info.builder == "decoder":
        problem += "; export with --no-optimize to trace the model instead"
    raise ParityError(problem)


def _checked_prefix(
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
    runner = _runner(graph, encoder, expected.outputs)
    sequences = expected.sequences
    whole = scores_of_sequences(runner, sequences, PARITY_BATCH_ROWS, f"parity: {graph.name}, whole sequences")
    with tqdm(total=len(split), desc=f"parity: {graph.name}, each prompt once", unit="seq", leave=False) as bar:
        pieces = PrefixRunner(runner).score_sequences([sequences[i] for i in split], PARITY_BATCH_ROWS, bar)
    diffs = whole.max_abs_diff(expected.scores)
    for name, diff in pieces.max_abs_diff(expected.scores.take(split)).items():
        diffs[name] = max(diffs[name], diff)
    return diffs


def _judged_prefix(
    prefix: PrefixGraph, graph: Path, encoder: SequenceEncoder, gated: Sequence[PreferenceExample], fp32_gaps, outputs
) -> PrefixGraph:
    """The bf16 variant's `graph` (a prefix graph) scoring responses after their prompts' keys and
    values, judged as bf16 itself was (the agreement gate against fp32 on held-out pairs, each
    pair's prompt run once), and against the same graph run whole."""
    runner = _runner(graph, encoder, outputs, "bf16")
    whole = example_rewards(runner, gated, "agreement gate: bf16, whole sequences")
    runner.prefix = PrefixRunner(runner)
    after = example_rewards(runner, gated, "agreement gate: bf16, each prompt once")
    gate = reduced.agreement(fp32_gaps, gaps_of(gated, after))
    refused = None if reduced.passes(gate) else str(reduced.PrecisionRefused("bf16 after a prompt", gate))
    variant = PrefixVariant(
        passed=refused is None,
        agreement=gate,
        max_abs_diff_whole=float(np.abs(after - whole).max(initial=0.0)),
        refused=refused,
    )
    return prefix.model_copy(update={"bf16": variant})


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


ALONE_SEQUENCES = 64  # graphs score up to these one at a time too (padding absent), a quarter of all at most
PARITY_BATCH_ROWS = 32


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


def _parity_problem(parity: Parity) -> str | None:
    """What is wrong with the fp32 graph's `parity`, or None. Reduced precisions are judged by
    the agreement gate instead (and fp16 by a relative bound too)."""
    if max(parity.max_abs_diff, parity.max_abs_diff_alone_vs_batched) > FP32_TOLERANCE:
        return f"fp32 graph differs from PyTorch beyond {FP32_TOLERANCE} (absolute): {parity}"
    return None


def _reward_statistics(
    source: ExportSource, runner: GraphRunner, rewards: np.ndarray, calibration: Sequence[PreferenceExample]
) -> dict:
    """Reward mean/std and temperature: training's, else measured here on the fp32 graph (its
    held-out `rewards`)."""
    stats = {k: source.stats[k] for k in ("reward_mean", "reward_std", "calibration_temperature") if k in source.stats}
    if "reward_mean" not in stats and len(rewards):
        stats.update(reward_mean=float(rewards.mean()), reward_std=float(rewards.std()))
    if calibration:
        stats["calibration_temperature"] = fit_temperature(reward_gaps(runner, calibration, "calibration"))
    return stats


def _export_record(checkpoint: Path, requested: str, not_gated: dict[str, str]) -> dict:
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    versions |= {"onnx": onnx.__version__, "onnxruntime": ort.__version__}
    with contextlib.suppress(ImportError):
        import openvino

        versions["openvino"] = openvino.__version__
    record = {"checkpoint": checkpoint.name, "requested_precision": requested, "versions": versions}
    return record | ({"precisions_not_gated": not_gated} if not_gated else {})
