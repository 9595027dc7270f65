"""Reduced precisions (int8, int4, bf16 and w8a8 for CPU, fp16 for GPU), the gate they must pass,
and each variant's judgement at export (`judged_variants`, `judged_prefix`).

A reward model is used to rank, so the gate asks what a user would: on held-out human
preference pairs, does the reduced precision still order the two responses as the fp32 graph
does, and does it still agree with the humans as often?

The gate is measured on the machine that exports, with the engine that serves each precision
(engine_choice.py): bf16 can only be judged on a CPU with bf16 instructions, w8a8 on one with
int8 dot products, fp16 on CUDA. The gate's pass is timed too: `auto` ships w8a8 only where it
scored the held-out pairs faster than every other variant that passed (on a small model the
quantization steps around its products can cost more than int8 saves).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from rewardserve.bundle import SequenceEncoder
from rewardserve.bundle.engine_choice import Machine, RequestedPrecision
from rewardserve.bundle.manifest import Agreement, Precision, PrefixGraph, PrefixVariant, Variant
from rewardserve.bundle.outputs import REWARD, ModelOutputs
from rewardserve.bundle.prefix import PrefixRunner
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.metrics import ranking_accuracy
from rewardserve.export.gaps import example_rewards, example_sequences, gaps_of, response_count, reward_gaps
from rewardserve.export.graph import data_file, move, save
from rewardserve.export.openvino_ir import (
    KeptDecisions,
    NotCompressible,
    products_at_bf16,
    write_bf16_graph,
    write_w8a8_graph,
)
from rewardserve.export.parity import TorchRewards, export_runner, measure_parity

logger = logging.getLogger(__name__)
BF16_GRAPH = "model.bf16.xml"
W8A8_GRAPH = "model.w8a8.xml"

MIN_DECISIONS_MATCHING = 0.99
MAX_ACCURACY_DROP = 0.005
FP16_TOLERANCE = 1e-2  # relative to the largest |reward|: fp16 graph vs PyTorch fp32
# int4 saves memory, not time, for a reward model's long prefills (docs/train-export.md): it is gated
# only when asked for by name. w8a8 comes after the variants its speed is compared with.
AUTO_TARGETS: tuple[Precision, ...] = ("int8", "bf16", "w8a8", "fp16")
# w8a8's activation ranges are calibrated on these many held-out examples (their responses in
# the model's own format), kept out of the gate: a gate on its own calibration data would flatter it.
W8A8_CALIBRATION_EXAMPLES = 32


class PrecisionRefused(RuntimeError):
    """The reduced precision changes too many of the fp32 graph's decisions (or its rewards)."""

    def __init__(self, precision: str, agreement: Agreement, message: str | None = None) -> None:
        self.agreement = agreement
        super().__init__(
            message
            or f"{precision} refused: on {agreement.pairs} held-out pairs it orders "
            f"{agreement.decisions_matching:.2%} the way fp32 does (at least {MIN_DECISIONS_MATCHING:.0%} needed) "
            f"with accuracy {agreement.accuracy:.4f} against fp32's {agreement.accuracy_fp32:.4f} "
            f"(a drop of at most {MAX_ACCURACY_DROP * 100:.1f} points allowed)"
        )


def targets(
    requested: RequestedPrecision, machine: Machine, heldout_examples: int
) -> tuple[list[Precision], dict[str, str]]:
    """The reduced precisions to gate, and those `auto` leaves out with why. A precision named
    that this machine cannot measure (or `heldout_examples` cannot calibrate) is a ValueError:
    its gate figures would not be its own."""
    if requested == "fp32":
        return [], {}
    if requested != "auto":
        if why_not := _cannot_gate(requested, machine, heldout_examples):
            raise ValueError(f"--precision {requested} cannot be gated here: {why_not}")
        return [requested], {}
    why_not = {p: why for p in AUTO_TARGETS if (why := _cannot_gate(p, machine, heldout_examples))}
    return [p for p in AUTO_TARGETS if p not in why_not], why_not


def _cannot_gate(precision: Precision, machine: Machine, heldout_examples: int) -> str | None:
    # int8 and int4 run on any CPU; the server decides where they are worth serving. w8a8's gate
    # and speed are measured in the int8 kernels that serve it.
    if precision == "w8a8" and heldout_examples < 2 * W8A8_CALIBRATION_EXAMPLES:
        needed = 2 * W8A8_CALIBRATION_EXAMPLES
        return f"w8a8 needs {needed} held-out examples (half to calibrate on), got {heldout_examples}"
    return None if precision in ("int8", "int4") else machine.cannot_run(precision)


def derive(
    fp32: Path,
    portable: Path,
    precision: Precision,
    calibration: Sequence[dict[str, np.ndarray]] = (),
    keep: KeptDecisions | None = None,
) -> Path:
    """The graph that runs at `precision`, written beside `fp32`. For bf16, `portable` (the graph
    OpenVINO reads; a decoder's prefix graph where it has one, which scores whole sequences too)
    in OpenVINO's format with fp16 weights, half the memory (openvino_ir.py); `portable` itself
    where a weight is beyond fp16's range. For w8a8, `portable` quantized with its activations'
    ranges calibrated on `calibration` (padded arrays of one sequence each); with `keep`, in
    mixed precision (write_w8a8_graph)."""
    if precision == "w8a8":
        if not calibration:
            raise ValueError("w8a8 needs held-out conversations to calibrate its activations' ranges on")
        return write_w8a8_graph(portable, fp32.with_name(W8A8_GRAPH), calibration, keep)
    if precision == "bf16":
        try:
            return write_bf16_graph(portable, fp32.with_name(BF16_GRAPH))
        except NotCompressible as exc:
            logger.warning("bf16 runs the fp32 weights: %s", exc)
            return portable
    out = fp32.with_name(f"{fp32.stem}.{precision}.onnx")
    if precision == "int4":
        quantize_weights(fp32, out, bits=4)
    else:
        (quantize_int8 if precision == "int8" else convert_fp16)(fp32, out)
    return out


def quantize_int8(fp32: Path, out: Path) -> None:
    """Dynamic int8: weights quantised per output channel ahead of time, activations per batch
    at run time, so no calibration data is needed and every sequence length works. A graph with
    external data is quantised one weight at a time (onnxruntime's quantizer held 3.3x the
    weights of a 0.6B decoder in memory)."""
    if data_file(fp32).exists():
        _quantize_int8_streamed(fp32, out)
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32,
        out,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Attention"],
        # Shape inference cannot type the outputs of fused contrib ops; they are all float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        use_external_data_format=data_file(fp32).exists(),  # past 2 GB
    )
    # quantize_dynamic writes protobuf directly; re-save so graphs past 2 GB move to external data.
    save(onnx.load(str(out)), out)


def _quantize_int8_streamed(fp32: Path, out: Path) -> None:
    """Every MatMul whose right operand is a weight becomes onnxruntime's DynamicQuantizeMatMul:
    the weight symmetric int8 per output column (in `<out>.data`, written as each is read), the
    activations quantised per batch at run time, as `quantize_dynamic` does. The other weights
    stay where the fp32 graph has them: its data file, which the bundle ships beside this graph."""
    from rewardserve.export.decoder_weights import WeightFile
    from rewardserve.export.decoder_writer import MS

    model = onnx.load(str(fp32), load_external_data=False)
    weights = {t.name: t for t in model.graph.initializer}
    quantized: dict[str, list[str]] = {}  # weight -> its int8 weight and scales, each written once
    nodes = []
    with WeightFile(data_file(out)) as written:
        for node in model.graph.node:
            weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
            if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 2:
                nodes.append(node)
                continue
            if weight.name not in quantized:
                # numpy_helper reads this tensor alone from the data file
                matrix = numpy_helper.to_array(weight, str(fp32.parent))
                scale = np.abs(matrix).max(axis=0) / 127.0
                scale[scale == 0] = 1.0
                tensors = [
                    written.add_array(
                        f"{weight.name}.int8", np.clip(np.rint(matrix / scale), -127, 127).astype(np.int8)
                    ),
                    written.add_array(f"{weight.name}.scale", scale.astype(np.float32)),
                ]
                model.graph.initializer.extend(tensors)
                quantized[weight.name] = [t.name for t in tensors]
            inputs = [node.input[0], *quantized[weight.name]]
            nodes.append(
                onnx.helper.make_node("DynamicQuantizeMatMul", inputs, list(node.output), name=node.name, domain=MS)
            )
    read = {name for node in nodes for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in read]  # fp32 weights still read by some node
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS, 1))
    onnx.save_model(model, str(out))


WEIGHT_BLOCK = 32  # weights per scale: onnxruntime-genai's CPU int4 default


def quantize_weights(fp32: Path, out: Path, bits: int, int8_activations: bool = False) -> None:
    """Weight-only quantisation: every MatMul's weights in blocks of WEIGHT_BLOCK along the input
    axis, `bits` wide with one fp32 scale a block (MatMulNBits, with CPU and CUDA kernels). The
    activations stay fp32 unless `int8_activations`, where onnxruntime quantises them per block
    at run time to use the CPU's int8 dot products (its accuracy level 4)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        str(fp32), bits=bits, block_size=WEIGHT_BLOCK, is_symmetric=True, accuracy_level=4 if int8_activations else 1
    )
    quantizer.process()
    save(quantizer.model.model, out)


def convert_fp16(fp32: Path, out: Path) -> None:
    """fp16 weights and activations, with fp32 inputs and output so the bundle's interface is
    unchanged; LayerNorm/Softmax-style ops that overflow stay in fp32 (onnxruntime's block list)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32)))
    model.convert_float_to_float16(keep_io_types=True)
    save(model.model, out)


def agreement(fp32_gaps: np.ndarray, reduced_gaps: np.ndarray) -> Agreement:
    return Agreement(
        pairs=len(fp32_gaps),
        decisions_matching=float(np.mean(np.sign(fp32_gaps) == np.sign(reduced_gaps))),
        accuracy_fp32=ranking_accuracy(fp32_gaps),
        accuracy=ranking_accuracy(reduced_gaps),
    )


def passes(result: Agreement) -> bool:
    return (
        result.decisions_matching >= MIN_DECISIONS_MATCHING
        and result.accuracy_fp32 - result.accuracy <= MAX_ACCURACY_DROP
    )


@dataclass(frozen=True)
class GateData:
    """What every variant is judged on: held-out examples, the fp32 graph's reward gaps on them,
    PyTorch's outputs for parity, the machine they are measured on, and the held-out examples
    w8a8 calibrates its activations on and holds its decisions to (none of them gated)."""

    heldout: Sequence[PreferenceExample]
    fp32_gaps: np.ndarray
    expected: TorchRewards
    machine: Machine
    calibration: Sequence[PreferenceExample] = ()


def judged_variants(
    fp32: Path,
    portable: Path,
    encoder: SequenceEncoder,
    targets: Sequence[Precision],
    keep_refused: bool,
    data: GateData,
    staging: Path,
) -> dict[Precision, Variant]:
    """Each target precision judged against the fp32 graph `fp32`: on held-out pairs (the
    agreement gate) and against PyTorch (parity). Passed variants' graphs are moved into
    `staging`. A refusal raises PrecisionRefused, or is recorded when `keep_refused` (auto,
    which also passes over a w8a8 variant slower than one that passed before it). `portable` is
    the graph OpenVINO reads; w8a8 calibrates on `data.calibration` (derive)."""
    variants: dict[Precision, Variant] = {}
    samples = [encoder.pad([sequence]).arrays for sequence in example_sequences(encoder, data.calibration)]
    for precision in targets:
        keep = _calibration_decisions(fp32, encoder, data, samples) if precision == "w8a8" else None
        variant = _judged(precision, fp32, portable, encoder, data, samples, keep)
        if variant.refused and not keep_refused:
            raise PrecisionRefused(precision, variant.agreement, variant.refused)
        if keep_refused and precision == "w8a8":
            variant = variant.model_copy(update={"auto_passes_over": _slower(variant, variants)})
        if variant.file:
            move(fp32.with_name(variant.file), staging)
        variants[precision] = variant
    return variants


def _slower(variant: Variant, before: dict[Precision, Variant]) -> str | None:
    """Why `auto` should not ship `variant`: a variant that passed ran the gate's pass faster."""
    faster = {
        p: v.seq_per_s for p, v in before.items() if v.passed and v.seq_per_s and v.seq_per_s >= variant.seq_per_s
    }
    if not variant.passed or not faster:
        return None
    others = ", ".join(f"{p} {rate:.1f}" for p, rate in faster.items())
    return (
        f"passed its gate at export but scored the held-out pairs at {variant.seq_per_s:.1f} seq/s there, "
        f"no faster than {others} seq/s (served when asked for by name)"
    )


def _judged(
    precision: Precision,
    fp32: Path,
    portable: Path,
    encoder: SequenceEncoder,
    data: GateData,
    samples: Sequence[dict[str, np.ndarray]],
    keep: KeptDecisions | None = None,
) -> Variant:
    """One precision's variant, judged in a session that closes when this returns (so that no
    two variants' sessions are in memory at once)."""
    graph = derive(fp32, portable, precision, samples, keep)
    runner = export_runner(graph, encoder, data.expected.outputs, precision)
    started = time.perf_counter()
    gate = agreement(data.fp32_gaps, reward_gaps(runner, data.heldout, f"agreement gate: {precision}"))
    seq_per_s = response_count(data.heldout) / (time.perf_counter() - started)
    refused = None if passes(gate) else str(PrecisionRefused(precision, gate))
    parity = None if refused else measure_parity(runner, data.expected)
    if parity and precision == "fp16" and parity.max_rel_diff > FP16_TOLERANCE:
        refused = f"fp16 refused: it differs from PyTorch fp32 beyond {FP16_TOLERANCE} (relative): {parity}"
    own_graph = not refused and runner.graph != fp32  # bf16 may run the fp32 graph itself
    return Variant(
        passed=refused is None,
        file=runner.graph.name if own_graph else None,
        agreement=gate,
        parity=parity,
        refused=refused,
        seq_per_s=seq_per_s,
        measured_on=data.machine.describe(),
        kept_at_bf16=products_at_bf16(graph) if keep else None,
    )


def _calibration_decisions(
    fp32: Path, encoder: SequenceEncoder, data: GateData, samples: Sequence[dict[str, np.ndarray]]
) -> KeptDecisions | None:
    """What w8a8's mixed precision holds the quantized graph to: fp32's decisions on the examples
    it calibrates on (`samples` are their sequences); where int8 changes one, products get their
    activations back at bf16 (write_w8a8_graph). The gated pairs choose nothing: they judge the
    result. None where the graph does not answer the reward itself (a judge's verdict, a PRM's
    steps): w8a8 is then quantized whole."""
    if REWARD not in data.expected.outputs.graph_outputs():
        return None
    runner = export_runner(fp32, encoder, data.expected.outputs)
    rewards = iter(example_rewards(runner, data.calibration, "w8a8: fp32's decisions on its calibration examples"))
    examples, first = [], 0
    for example in data.calibration:
        scores = [next(rewards) for _ in example.responses]
        pairs = example.ordered_pairs()
        indices = list(range(first, first + len(scores)))
        examples.append((indices, pairs, np.sign([scores[i] - scores[j] for i, j in pairs])))
        first += len(scores)
    return KeptDecisions(samples, examples, REWARD, 1.0 - MIN_DECISIONS_MATCHING)


def judged_prefix(
    prefix: PrefixGraph,
    precision: Precision,
    graph: Path,
    encoder: SequenceEncoder,
    gated: Sequence[PreferenceExample],
    fp32_gaps: np.ndarray,
    outputs: ModelOutputs,
) -> PrefixGraph:
    """An OpenVINO variant's `graph` (a prefix graph) scoring responses after their prompts' keys
    and values, judged as the variant itself was (the agreement gate against fp32 on held-out
    pairs, each pair's prompt run once), and against the same graph run whole."""
    runner = export_runner(graph, encoder, outputs, precision)
    whole = example_rewards(runner, gated, f"agreement gate: {precision}, whole sequences")
    after = example_rewards(runner, gated, f"agreement gate: {precision}, each prompt once", PrefixRunner(runner))
    gate = agreement(fp32_gaps, gaps_of(gated, after))
    refused = None if passes(gate) else str(PrecisionRefused(f"{precision} after a prompt", gate))
    variant = PrefixVariant(
        passed=refused is None,
        agreement=gate,
        max_abs_diff_whole=float(np.abs(after - whole).max(initial=0.0)),
        response_bucket=runner.response_bucket,
        refused=refused,
    )
    return prefix.model_copy(update={precision: variant})
