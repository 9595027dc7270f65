"""Checkpoint -> verified ONNX bundle.

The steps, each checked before the next builds on it:

1. trace the reward function to ONNX (fp32);
2. fuse it with onnxruntime's transformer optimizer, keeping the traced graph when the
   architecture has no fusions or the fused graph fails parity;
3. for int8 or fp16, derive the reduced graph and put it through the agreement gate;
4. measure parity of the shipped graph against PyTorch;
5. check the fp32 bundle against the model's reference usage, the ids and rewards its own
   transformers code gives (`reference.py`);
6. fit what calibration asks for, and write the bundle, moved into place only once complete.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers

from rewardserve.bundle import EncodedSequence, Manifest, SequenceEncoder, save_bundle
from rewardserve.bundle.manifest import Agreement, GraphInfo, Parity, Precision
from rewardserve.bundle.runtime import GraphRunner, providers_for, score_offline
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.metrics import fit_temperature
from rewardserve.export import graph as graphs
from rewardserve.export.gaps import example_inputs, model_prompt, reward_gaps
from rewardserve.export.precision import PrecisionRefused, agreement, convert_fp16, passes, quantize_int8
from rewardserve.export.reference import check_reference
from rewardserve.export.source import ExportSource, load_source
from rewardserve.training.checkpoint import TOKENIZER_FILE

RequestedPrecision = Literal["fp32", "fp16", "int8", "auto"]
FP32_TOLERANCE = 1e-4  # absolute: fp32 graph vs PyTorch eager
FP16_TOLERANCE = 1e-2  # relative to the largest |reward|: fp16 graph vs PyTorch fp32
MIN_PARITY_SEQUENCES = 256


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
) -> Manifest:
    """Export `checkpoint` into the bundle directory `out`.

    `parity_pairs` are the (prompt, response) texts parity is measured on; `heldout` the
    preference pairs a reduced precision must keep agreeing on (and where reward statistics are
    measured when training left none); `calibration`, when given, the pairs the temperature is
    fitted on. `precision="auto"` ships fp16 where CUDA is available and int8 elsewhere when the
    gate passes, and fp32 when it does not.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    source = load_source(checkpoint, max_length, padding_side)
    encoder = SequenceEncoder(source.tokenizer, source.input_format)
    inputs = [(model_prompt(source.input_format, p), r) for p, r in parity_pairs]
    sequences = encoder.encode([p for p, _ in inputs], [r for _, r in inputs])
    if len(sequences) < MIN_PARITY_SEQUENCES:
        raise ValueError(f"parity needs at least {MIN_PARITY_SEQUENCES} sequences, got {len(sequences)}")
    if precision != "fp32" and not heldout:
        raise ValueError(f"--precision {precision} needs held-out preference pairs for its agreement gate")

    record = {**source.training, **(provenance or {}), "export": None}
    with _staged(out) as staging:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-graphs-") as scratch:
            fp32, info, fp32_parity = _fp32_graph(source, encoder, sequences, Path(scratch), optimize)
            # On the fp32 graph: a reduced precision is judged by its gate, against this graph.
            more = example_inputs(source.input_format, heldout)
            reference = check_reference(checkpoint, source, GraphRunner(fp32, encoder), [*inputs, *more])
            shipped, chosen, gate, refused = fp32, "fp32", None, None
            if precision != "fp32":
                target = _reduced_precision(precision)
                shipped, chosen, gate, refused = _reduce(fp32, target, precision == "auto", encoder, heldout)
            external = graphs.save(onnx.load(str(shipped)), staging / graphs.GRAPH_FILE)
        source.tokenizer.save(str(staging / TOKENIZER_FILE))
        runner = GraphRunner(staging / graphs.GRAPH_FILE, encoder, providers=providers_for(chosen))
        parity = fp32_parity if chosen == "fp32" else measure_parity(source, runner, sequences)
        _check_parity(parity, chosen)
        record["export"] = _export_record(checkpoint, precision, refused)
        manifest = Manifest(
            name=name or checkpoint.name,
            input_format=source.input_format,
            precision=chosen,
            graph=info.model_copy(update={"external_data": external}),
            parity=parity,
            reference=reference,
            agreement=gate,
            **_reward_statistics(source, runner, heldout, calibration),
            provenance=record,
        )
        return save_bundle(staging, manifest)


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


def _reduce(
    fp32: Path, precision: Precision, fall_back: bool, encoder: SequenceEncoder, heldout: Sequence[PreferenceExample]
) -> tuple[Path, Precision, Agreement | None, str | None]:
    """The reduced graph with its gate figures if it passes the agreement gate; else the fp32
    graph and the refusal when `fall_back`, else PrecisionRefused."""
    reduced = fp32.with_name(f"{precision}.onnx")
    (quantize_int8 if precision == "int8" else convert_fp16)(fp32, reduced)
    reference = reward_gaps(GraphRunner(fp32, encoder), heldout)
    runner = GraphRunner(reduced, encoder, providers=providers_for(precision))
    gate = agreement(reference, reward_gaps(runner, heldout))
    if passes(gate):
        return reduced, precision, gate, None
    if fall_back:
        return fp32, "fp32", None, str(PrecisionRefused(precision, gate))
    raise PrecisionRefused(precision, gate)


def _reduced_precision(precision: RequestedPrecision) -> Precision:
    if precision == "auto":
        return "fp16" if "CUDAExecutionProvider" in ort.get_available_providers() else "int8"
    return precision


def _fp32_graph(
    source: ExportSource, encoder: SequenceEncoder, sequences: Sequence[EncodedSequence], work: Path, optimize: bool
) -> tuple[Path, GraphInfo, Parity]:
    """The fused fp32 graph when fusion is possible and keeps parity, else the traced one."""
    traced = work / "traced.onnx"
    graphs.trace(source, encoder.pad(sequences[:2]).arrays, traced)

    def unfused(why: str) -> tuple[Path, GraphInfo, Parity]:
        parity = measure_parity(source, GraphRunner(traced, encoder), sequences)
        return traced, GraphInfo(opset=graphs.OPSET, fallback=why), parity

    if not optimize:
        return unfused("optimisation switched off (--no-optimize)")
    fused = work / "fused.onnx"
    try:
        info = graphs.optimize(source, traced, fused)
    except Exception as exc:  # noqa: BLE001 - any optimiser failure means: keep the traced graph
        return unfused(f"{type(exc).__name__}: {exc}"[:500])
    parity = measure_parity(source, GraphRunner(fused, encoder), sequences)
    if problem := _parity_problem(parity, "fp32"):
        return unfused(f"the fused graph failed parity: {problem}")
    return fused, info, parity


@torch.inference_mode()
def torch_rewards(source: ExportSource, encoder: SequenceEncoder, sequences: Sequence[EncodedSequence]) -> np.ndarray:
    arrays = encoder.pad(sequences).arrays
    return source.reward(*(torch.from_numpy(arrays[n]) for n in source.input_format.input_names)).float().numpy()


def measure_parity(
    source: ExportSource, runner: GraphRunner, sequences: Sequence[EncodedSequence], batch_size: int = 32
) -> Parity:
    """Compare rewards in arrival-order batches of mixed lengths (padding present) and alone
    (padding absent), between PyTorch and ONNX and between alone and batched in ONNX."""
    encoder = runner.encoder
    batched_onnx, batched_torch = [], []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        batched_onnx.append(runner.run(encoder.pad(chunk)))
        batched_torch.append(torch_rewards(source, encoder, chunk))
    onnx_batched = np.concatenate(batched_onnx)
    torch_batched = np.concatenate(batched_torch)
    alone = sequences[: min(len(sequences), 64)]
    onnx_alone = np.array([runner.run(encoder.pad([s]))[0] for s in alone])
    torch_alone = np.array([torch_rewards(source, encoder, [s])[0] for s in alone])
    max_abs = float(max(np.abs(onnx_batched - torch_batched).max(), np.abs(onnx_alone - torch_alone).max()))
    return Parity(
        sequences=len(sequences),
        max_abs_diff=max_abs,
        max_rel_diff=max_abs / max(float(np.abs(torch_batched).max()), 1e-12),
        max_abs_diff_alone_vs_batched=float(np.abs(onnx_alone - onnx_batched[: len(alone)]).max()),
    )


def _parity_problem(parity: Parity, precision: Precision) -> str | None:
    """What is wrong with `parity` for a graph of `precision`, or None. int8 is judged by the
    agreement gate instead: dynamic quantisation's per-batch scales make rewards batch-dependent."""
    if precision == "fp32" and max(parity.max_abs_diff, parity.max_abs_diff_alone_vs_batched) > FP32_TOLERANCE:
        return f"fp32 graph differs from PyTorch beyond {FP32_TOLERANCE} (absolute): {parity}"
    if precision == "fp16" and parity.max_rel_diff > FP16_TOLERANCE:
        return f"fp16 graph differs from PyTorch beyond {FP16_TOLERANCE} (relative): {parity}"
    return None


def _check_parity(parity: Parity, precision: Precision) -> None:
    if problem := _parity_problem(parity, precision):
        raise ParityError(problem)


def _reward_statistics(
    source: ExportSource,
    runner: GraphRunner,
    heldout: Sequence[PreferenceExample],
    calibration: Sequence[PreferenceExample],
) -> dict:
    """Reward mean/std and temperature: training's, else measured here on the shipped graph."""
    stats = {k: source.stats[k] for k in ("reward_mean", "reward_std", "calibration_temperature") if k in source.stats}
    if "reward_mean" not in stats and heldout:
        inputs = example_inputs(runner.encoder.format, heldout)
        rewards = score_offline(runner, [p for p, _ in inputs], [r for _, r in inputs])
        stats.update(reward_mean=float(rewards.mean()), reward_std=float(rewards.std()))
    if calibration:
        stats["calibration_temperature"] = fit_temperature(reward_gaps(runner, calibration))
    return stats


def _export_record(checkpoint: Path, requested: str, refused: str | None) -> dict:
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    versions |= {"onnx": onnx.__version__, "onnxruntime": ort.__version__}
    record = {"checkpoint": checkpoint.name, "requested_precision": requested, "versions": versions}
    return record | ({"reduced_precision_refused": refused} if refused else {})
