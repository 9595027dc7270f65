"""Checkpoint -> verified ONNX bundle: `export_bundle` runs the steps, each checked before the
next builds on it, and each step's work is in its own module:

1. while the PyTorch model is loaded: its reward of each parity sequence, the model card's
   rewards for the reference check (`reference.py`), and the fp32 graph candidates, written
   from the weights for the decoder families `decoder_graph.py` knows, else traced and fused
   with onnxruntime's transformer optimizer (and traced alone, as a fallback); then the model
   leaves memory;
2. the first candidate that keeps parity with PyTorch (`parity.py`) is the fp32 graph, with its
   prefix graph where it has one that keeps parity too (`fp32_graph.py`);
3. check it against the model's reference usage, the ids and rewards its own transformers code
   gives;
4. put each reduced precision asked for (int8, int4, bf16, w8a8, fp16) through the agreement gate
   against the fp32 graph, and measure its parity against PyTorch (`precision.py`); those that
   pass ship beside the fp32 graph as variants, and the server picks one per machine (w8a8's
   activations are calibrated on held-out conversations that its gate does not read);
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers

from rewardserve.bundle import EncodedSequence, Manifest, SequenceEncoder, save_bundle
from rewardserve.bundle.engine_choice import Machine, RequestedPrecision
from rewardserve.bundle.formatting import Text
from rewardserve.bundle.judge import ResponsePair
from rewardserve.bundle.manifest import OPENVINO_PRECISIONS, Precision, PrefixGraph, Reference, Variant
from rewardserve.bundle.outputs import ModelOutputs, join_steps
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.metrics import fit_temperature
from rewardserve.export import graph as graphs
from rewardserve.export import precision as reduced
from rewardserve.export.fp32_graph import Candidate, FP32Graph, candidates, checked_prefix, first_within_parity
from rewardserve.export.gaps import (
    example_inputs,
    example_rewards,
    gaps_of,
    model_prompt,
    response_count,
    reward_gaps,
)
from rewardserve.export.judge_source import load_judge_source
from rewardserve.export.parity import TorchRewards, export_runner, torch_reference
from rewardserve.export.reference import ModelCardRewards, check_reference, model_card_rewards
from rewardserve.export.source import ExportSource, OutputOptions, load_source
from rewardserve.export.token_prm_source import load_token_prm_source
from rewardserve.training.checkpoint import TOKENIZER_FILE

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
    """Export `checkpoint` into the bundle directory `out`: parity on `parity_pairs`; reduced
    precisions gated on `heldout` (a `precision` named must pass, `auto` ships those that do);
    temperature fitted on `calibration`; `sizes` caps each pass (samples above
    LARGE_MODEL_PARAMETERS); `output_options` say what cannot be read off a multi-output model."""
    checkpoint, out = Path(checkpoint), Path(out)
    machine = machine or Machine.this()
    targets, not_gated = reduced.targets(precision, machine, len(heldout))
    source = _load(checkpoint, max_length, padding_side, output_options or OutputOptions())
    calibration = _as_the_model_reads(source.outputs, [], calibration)[1]
    sizes, auto = sizes.for_model(source.parameters), precision == "auto"
    encoder = SequenceEncoder(source.tokenizer, source.input_format)
    data = _held_out(source, encoder, parity_pairs, heldout, sizes, targets, precision)
    export = _export_record(checkpoint, precision, not_gated) | {"pass_sizes": asdict(sizes)}
    record = {**source.training, **(provenance or {}), "export": export}
    with _staged(out) as staging:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-graphs-") as scratch:
            expected, card, candidates = _from_pytorch(
                checkpoint, source, encoder, data, sizes, Path(scratch), optimize
            )
            fp32 = first_within_parity(candidates, encoder, expected)
            prefix, prefix_left_out = checked_prefix(fp32, encoder, expected)
            reference, fp32_gaps, statistics = _fp32_passes(fp32, encoder, source, card, data, calibration)
            bf16_from = _bf16_graph(fp32, prefix)
            gate = reduced.GateData(data.gated, fp32_gaps, expected, machine, data.quantized_on)
            variants = reduced.judged_variants(fp32.path, bf16_from, encoder, targets, auto, gate, staging)
            external = _move_fp32_graphs(fp32, prefix, staging)
            prefix = _openvino_prefixes(
                prefix, variants, staging / bf16_from.name, encoder, data, fp32_gaps, source.outputs
            )
        source.tokenizer.save(str(staging / TOKENIZER_FILE))
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


def _load(checkpoint: Path, max_length: int | None, padding_side: str | None, options: OutputOptions) -> ExportSource:
    """A reward model's source, or a causal LM's as the judge `options.judge` reads it, or as a
    process reward model by its step tokens' probabilities."""
    told = [
        name for name, value in asdict(options).items() if value not in (None, False, OutputOptions().__dict__[name])
    ]
    if options.step_tokens is not None:
        if extra := [t for t in told if t not in ("step_tokens", "step_separator", "step_scalar")]:
            raise ValueError(f"--step-tokens reads a causal LM's step tokens: {', '.join(extra)} do not apply")
        return load_token_prm_source(checkpoint, options, max_length, padding_side)
    if options.judge is None:
        return load_source(checkpoint, max_length, padding_side, options)
    if told != ["judge"]:
        raise ValueError(f"--judge reads a causal LM: {', '.join(t for t in told if t != 'judge')} do not apply")
    return load_judge_source(checkpoint, options.judge, max_length, padding_side)


@dataclass(frozen=True)
class HeldOut:
    """What each export pass reads, cut to its PassSizes."""

    sequences: list[EncodedSequence]  # parity: PyTorch against each graph
    model_inputs: list[tuple[Text, Text]]  # the reference check: parity's inputs and the held-out pairs'
    gated: Sequence[PreferenceExample]  # the agreement gate of reduced precisions
    measured: Sequence[PreferenceExample]  # reward statistics, where training left none
    quantized_on: Sequence[PreferenceExample]  # w8a8's calibration: held-out examples after the gated ones


def _held_out(
    source: ExportSource,
    encoder: SequenceEncoder,
    parity_pairs: Sequence[tuple[str, str]],
    heldout: Sequence[PreferenceExample],
    sizes: PassSizes,
    targets: Sequence[Precision],
    precision: str,
) -> HeldOut:
    parity_pairs, heldout = _as_the_model_reads(source.outputs, parity_pairs, heldout)
    inputs = [(model_prompt(source.input_format, p), r) for p, r in parity_pairs]
    sequences = _parity_sequences(source.outputs, encoder, inputs[: sizes.parity_sequences])
    if targets and not heldout:
        raise ValueError(f"--precision {precision} needs held-out preference pairs for its agreement gate")
    gated, quantized_on = (heldout[: sizes.gate_examples] if targets else []), heldout[:0]
    if "w8a8" in targets:  # calibrated after the gated examples; where the gate reads them all, on its last ones
        gate_end = min(len(gated), len(heldout) - reduced.W8A8_CALIBRATION_EXAMPLES)
        gated, quantized_on = heldout[:gate_end], heldout[gate_end:][: reduced.W8A8_CALIBRATION_EXAMPLES]
    return HeldOut(
        sequences=sequences,
        model_inputs=[*inputs, *example_inputs(source.input_format, heldout)],
        gated=gated,
        measured=heldout[: sizes.statistics_examples] if "reward_mean" not in source.stats else [],
        quantized_on=quantized_on,
    )


def _as_the_model_reads(
    outputs: ModelOutputs, parity_pairs: Sequence[tuple[str, str]], heldout: Sequence[PreferenceExample]
) -> tuple[Sequence[tuple[str, Any]], Sequence[PreferenceExample]]:
    """The texts as the model reads them: a process reward model's responses cut into steps; a
    pairwise judge's in pairs."""
    if outputs.steps is not None:
        separator = outputs.steps.separator
        return [(p, stepped(r, separator)) for p, r in parity_pairs], [_stepped_example(e, separator) for e in heldout]
    if outputs.verdict is not None and outputs.verdict.rule == "pairwise":
        # Parity compares graphs on any texts: each response beside the next pair's.
        partners = [r for _, r in parity_pairs[1:]] + [r for _, r in parity_pairs[:1]]
        paired = [(p, ResponsePair(r, other)) for (p, r), other in zip(parity_pairs, partners, strict=True)]
        return paired, [pair for e in heldout for pair in judged_pairs(e)]
    return parity_pairs, heldout


def judged_pairs(example: PreferenceExample) -> list[PreferenceExample]:
    """`example` as a pairwise judge reads it: for each strictly ordered pair (better, worse), the
    text with the better response first, ranked above the text with it second. The gap between
    the two texts' rewards is positive exactly when the judge's swap-averaged preference agrees
    (bundle/judge/pairwise.py), so the agreement gate and the reward statistics read it as they
    read a classifier's pairs."""
    messages = example.response_messages
    pairs = []
    for better, worse in example.ordered_pairs():
        texts = ResponsePair(example.responses[better], example.responses[worse])
        turns = messages and ResponsePair(messages[better], messages[worse])
        pairs.append(
            dataclasses.replace(
                example,
                responses=(texts, texts.swapped()),
                ranks=(0, 1),
                response_messages=turns and (turns, turns.swapped()),
            )
        )
    return pairs


def _parity_sequences(
    outputs: ModelOutputs, encoder: SequenceEncoder, inputs: Sequence[tuple[Text, str]]
) -> list[EncodedSequence]:
    """The sequences parity is measured on: at least MIN_PARITY_SEQUENCES."""
    sequences = encoder.encode([p for p, _ in inputs], [r for _, r in inputs])
    if outputs.steps is not None:  # a step cut off by truncation would be missing on both sides, unnoticed
        sequences = [s for s in sequences if not s.response_cut]
    if len(sequences) < MIN_PARITY_SEQUENCES:
        raise ValueError(f"parity needs at least {MIN_PARITY_SEQUENCES} sequences, got {len(sequences)}")
    return sequences


def _from_pytorch(
    checkpoint: Path,
    source: ExportSource,
    encoder: SequenceEncoder,
    data: HeldOut,
    sizes: PassSizes,
    work: Path,
    optimize: bool,
) -> tuple[TorchRewards, ModelCardRewards, list[Candidate]]:
    """PyTorch's side first: its rewards, the model card's, and the graphs written from (or traced
    through) the model. Then the model leaves memory to the sessions that score them."""
    with source.on_gpu():
        expected = torch_reference(source, encoder, data.sequences)
        card = model_card_rewards(checkpoint, source, encoder, data.model_inputs, sizes.reference_conversations)
    graphs_to_try = candidates(source, encoder, data.sequences[:2], work, optimize)
    source.forget_model()
    return expected, card, graphs_to_try


def _fp32_passes(
    fp32: FP32Graph,
    encoder: SequenceEncoder,
    source: ExportSource,
    card: ModelCardRewards,
    data: HeldOut,
    calibration: Sequence[PreferenceExample],
) -> tuple[Reference, np.ndarray, dict]:
    """The fp32 graph against the model card's usage, and its held-out rewards: the reward gaps
    the reduced precisions are gated against, and reward statistics where training left none.
    Its session closes on return: each variant's opens once it has (one session at a time)."""
    runner = export_runner(fp32.path, encoder, source.outputs)
    reference = check_reference(runner, card)
    # Both are prefixes of heldout: one fp32 scoring serves the gate and the statistics.
    fp32_rewards = example_rewards(runner, max(data.gated, data.measured, key=len), "held-out rewards: fp32")
    statistics = _reward_statistics(source, runner, fp32_rewards[: response_count(data.measured)], calibration)
    return reference, gaps_of(data.gated, fp32_rewards), statistics


def _bf16_graph(fp32: FP32Graph, prefix: PrefixGraph | None) -> Path:
    """The graph OpenVINO runs at bf16: a decoder's portable prefix graph (which scores whole
    sequences too), else the fp32 graph's portable form."""
    if prefix is not None and prefix.portable_file is not None:
        return fp32.path.with_name(prefix.portable_file)
    return fp32.portable


def _openvino_prefixes(
    prefix: PrefixGraph | None,
    variants: dict[Precision, Variant],
    bf16_from: Path,
    encoder: SequenceEncoder,
    data: HeldOut,
    fp32_gaps: np.ndarray,
    outputs: ModelOutputs,
) -> PrefixGraph | None:
    """`prefix`, with each OpenVINO variant's judgement after prompts where it ships a portable
    prefix graph (`bf16_from`, moved into the bundle; bf16 runs it where it has no graph of its own)."""
    if prefix is None or prefix.portable_file is None:
        return prefix
    for precision in OPENVINO_PRECISIONS:
        variant = variants.get(precision)
        if variant is not None and variant.passed:
            graph = bf16_from.with_name(variant.file) if variant.file else bf16_from
            prefix = reduced.judged_prefix(prefix, precision, graph, encoder, data.gated, fp32_gaps, outputs)
    return prefix


def _move_fp32_graphs(fp32: FP32Graph, prefix: PrefixGraph | None, staging: Path) -> bool:
    """The fp32 graph and its prefix graphs into the bundle; whether they keep an external data file."""
    external = graphs.data_file(fp32.path).exists()
    graphs.move(fp32.path, staging)
    for file in (prefix.file, prefix.portable_file) if prefix is not None else ():
        if file and file != fp32.path.name:
            graphs.move(fp32.path.with_name(file), staging)  # they read fp32's data file
    return external


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
