"""The OpenVINO variants' graphs: the fp32 ONNX graph written in OpenVINO's own format (IR), its
weights stored as fp16 (bf16, `write_bf16_graph`); and the same graph with int8 weights and
calibrated int8 activations in its matrix products (w8a8, `write_w8a8_graph`).

OpenVINO at bf16 inference precision keeps an fp32 graph's weights as it read them and packs a
bf16 copy of each matrix for its AMX kernels: a 0.6B decoder held 3.54 GiB after its first
call for 1.76 GiB of fp32 weights (2.0x, before the server's own memory). fp16 weights are the
compressed form its CPU plugin decompresses inside the matrix products itself, without an fp32
copy: the same decoder held 1.78 GiB (1.0x; benchmarks/bf16_engine.py) at the same speed (0.99x,
side by side in a one-off run). fp16 keeps 11 significant bits of each weight, more than the 8 that
bf16 computes with. A graph with a weight beyond fp16's range is not written (NotCompressible):
the bf16 variant then runs the fp32 graph, as before. What the gate judges at export is the file
the server runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewardserve.bundle.openvino_session import find_head
from rewardserve.bundle.past import PAST, PRESENT, EmptyPast

FP16_MAX = 65504.0
SMOOTH_QUANT_ALPHA = 0.5  # write_w8a8_graph says why
# Mixed precision puts w8a8's products back at bf16 in steps, one quantizer group a step (a product,
# or the products that read one quantized input: a layer's q, k and v projections), in at most
# this share of the products' count of steps: each product back costs what int8 saved on it.
MOST_STEPS_TO_BF16 = 0.25
# Attention's products left at bf16 in w8a8 (`attention_products` says why);
# benchmarks/attention_precision.py turns it off to compare.
ATTENTION_AT_BF16 = True


class NotCompressible(ValueError):
    """A weight fp16 cannot hold: OpenVINO's compression would clamp it silently."""


def write_bf16_graph(graph: Path, out: Path) -> Path:
    """`graph` (an ONNX file OpenVINO reads) as an IR at `out` (…xml, and its .bin), weights in
    fp16; NotCompressible when a weight has values beyond fp16's range beside values within it
    (OpenVINO would clamp those to 65504; a constant wholly beyond it, a mask's floor, stays fp32)."""
    import openvino as ov

    ov.save_model(_compressible(graph), str(out), compress_to_fp16=True)
    return out


@dataclass(frozen=True)
class KeptDecisions:
    """Held-out preference examples on which a quantized graph must order each pair as fp32 does:
    the metric of NNCF's quantization with accuracy control (mixed precision). NNCF reads it one
    sequence at a time, (index, padded arrays) of `sequences`; `examples` gives each example's
    sequences (indices), its ordered pairs (better, worse; positions among them) and the signs of
    fp32's reward gaps on those pairs."""

    sequences: Sequence[dict[str, np.ndarray]]
    examples: Sequence[tuple[list[int], list[tuple[int, int]], np.ndarray]]
    reward: str  # the graph output the reward is read from
    max_drop: float  # the most the share of decisions kept may fall below the unquantized graph's

    @property
    def items(self) -> list[tuple[int, dict[str, np.ndarray]]]:
        return list(enumerate(self.sequences))

    def __call__(self, compiled, items) -> tuple[float, list[list[np.ndarray]]]:
        """(decisions kept over the pairs whose sequences are all among `items`, each item's
        reward), `compiled` an OpenVINO compiled model of the graph being quantized. NNCF ranks
        the products to put back by how far they move the rewards of the items the quantized
        graph moved most: continuous numbers, where decisions would rank nothing until one flips."""
        whole = _empty_past(compiled)
        output = compiled.output(self.reward)
        rewards = {index: compiled(whole(arrays))[output].ravel()[:1].astype(np.float32) for index, arrays in items}
        kept = counted = 0
        for indices, pairs, signs in self.examples:
            if all(index in rewards for index in indices):
                scores = [float(rewards[index][0]) for index in indices]
                kept += sum(np.sign(scores[i] - scores[j]) == s for (i, j), s in zip(pairs, signs, strict=True))
                counted += len(pairs)
        return (kept / counted if counted else 1.0), [[rewards[index]] for index, _ in items]


def write_w8a8_graph(
    graph: Path, out: Path, samples: Sequence[dict[str, np.ndarray]], keep: KeptDecisions | None = None
) -> Path:
    """`graph` as an IR at `out` whose matrix products read int8 weights (per output channel) and
    int8 activations, their ranges calibrated on `samples` (the graph's feeds: held-out
    conversations in the model's own format) by NNCF's post-training quantization for
    transformers, SmoothQuant first: it moves the activations' outlier channels into the weights,
    which an int8 activation range cannot hold otherwise. The reward head (pooling, projection, an
    objectives rule) is left out: it is a few operations, and the reward is read from it. So are
    attention's two products, which read no weight: quantized, they cost more than they save
    (`attention_products` gives the figures). The other weights are stored as fp16, as bf16's
    are; NotCompressible as for bf16.

    SmoothQuant's migration strength is SMOOTH_QUANT_ALPHA, not NNCF's default for transformers
    (0.95): on the tests' trained Qwen3-shaped decoder, 32 held-out HH examples calibrating, 541
    other pairs gated, 0.95 kept 99.26% of fp32's decisions but lost 0.74 points of accuracy (the
    gate allows 0.5); 0.5, the SmoothQuant paper's, kept 99.63% at fp32's accuracy; no SmoothQuant
    kept 98.89%.

    With `keep` (mixed precision), NNCF's quantization with accuracy control: where the
    quantized graph keeps fewer of `keep`'s decisions than the unquantized one by more than its
    `max_drop`, the products whose int8 moves the rewards most get their activations back at bf16
    (their weights stay int8) a step at a time, in the order NNCF ranks them, until it does or
    MOST_STEPS_TO_BF16 says to stop. Only the activations: with their weights put back too (NNCF's
    default), 6 products put back on the tests' trained decoder cut the gated decisions kept from
    99.08% (quantized whole) to 93.16%, where activations alone kept 99.26%. Not traced; our
    reading is that the weights put back are the ones before SmoothQuant scaled them."""
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)  # it logs every node it leaves alone
    model = _compressible(graph)
    scored = [r for r in model.get_results() if not any(n.startswith(PRESENT) for n in r.input_value(0).get_names())]
    head, _ = find_head(scored)
    whole = _empty_past(model)  # what it reads: a prefix graph's whole sequences after an empty past
    calibration = nncf.Dataset([whole(sample) for sample in samples])
    options = dict(
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(names=sorted(head) + attention_products(model), validate=False),
    )
    smooth = nncf.AdvancedQuantizationParameters(
        smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
    )
    if keep is None:
        quantized = nncf.quantize(model, calibration, advanced_parameters=smooth, **options)
    else:
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calibration,
            nncf.Dataset(keep.items, lambda item: whole(item[1])),
            keep,
            max_drop=keep.max_drop,
            advanced_quantization_parameters=smooth,
            advanced_accuracy_restorer_parameters=_restoring(model),
            **options,
        )
    ov.save_model(quantized, str(out), compress_to_fp16=True)
    return out


def _restoring(model):
    """How accuracy control puts products back (write_w8a8_graph says why): their activations
    only, in at most MOST_STEPS_TO_BF16 of `model`'s products' count of steps."""
    import nncf
    from nncf.quantization.advanced_parameters import RestoreMode

    return nncf.AdvancedAccuracyRestorerParameters(
        max_num_iterations=int(len(products(model)) * MOST_STEPS_TO_BF16),
        restore_mode=RestoreMode.ONLY_ACTIVATIONS,
    )


def products(model) -> dict[str, bool]:
    """Each matrix product of `model` (an openvino.Model) by a weight, and whether it runs in int8:
    its weight int8 (behind its scale) and its activations quantized (a FakeQuantize before it).
    The others run at bf16: the reward head's, and those mixed precision put back."""
    import openvino as ov

    found = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and (constants := _weight_constants(op)) is not None:
            int8_weight = any(c.get_element_type() == ov.Type.i8 for c in constants)
            quantized_input = op.input_value(0).get_node().get_type_name() == "FakeQuantize"
            found[op.get_friendly_name()] = int8_weight and quantized_input
    return found


def products_at_bf16(graph: Path) -> list[str]:
    """The products by a weight that a w8a8 graph (an IR file) leaves at bf16, the head's included."""
    import openvino as ov

    return [name for name, int8 in products(ov.Core().read_model(str(graph))).items() if not int8]


def attention_products(model) -> list[str]:
    """The matrix products of `model` (an openvino.Model) that read no weight (attention's: the
    queries by the keys, the weights by the values), which w8a8 leaves at bf16 (none while
    ATTENTION_AT_BF16 is off). On the 0.6B Qwen3 shape, against the same graph with them
    quantized too (two runs), whole sequences of ~450 tokens ran 1.13-1.16x faster, a 1,000-token
    prompt 1.02-1.06x, 8 responses after a 300-token prompt 1.04-1.07x and after a 1,000-token
    one 0.99x (benchmarks/attention_precision.py). Quantized, each layer's queries and keys went
    through a FakeQuantize and layout changes before the products, which cost more than their
    int8 saved."""
    if not ATTENTION_AT_BF16:
        return []
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "MatMul" and _weight_constants(op) is None
    ]


def _weight_constants(op) -> list | None:
    """The constants a MatMul's second operand is computed from (through converting and
    dequantizing nodes), or None where it reads an activation (attention's products)."""
    constants, stack = [], [op.input_value(1).get_node()]
    while stack:
        node = stack.pop()
        if node.get_type_name() == "Constant":
            constants.append(node)
        elif node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
            stack += [port.get_source_output().get_node() for port in node.inputs()]
        else:
            return None
    return constants


def _empty_past(compiled):
    """What `compiled` (a prefix graph, or not) reads beside one sequence's padded arrays."""
    shapes = {
        port.get_any_name(): [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        for port in compiled.inputs
        if port.get_any_name().startswith(PAST)
    }
    names = {name for port in compiled.inputs for name in port.get_names()}
    whole = EmptyPast(shapes, np.dtype(np.float32)) if shapes else dict
    return lambda arrays: {name: array for name, array in whole(arrays).items() if name in names}


def _compressible(graph: Path):
    """`graph` read by OpenVINO, once no weight would be clamped by fp16 compression."""
    import openvino as ov

    model = ov.Core().read_model(str(graph))
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32:
            magnitudes = np.abs(op.get_data())
            beyond = np.isfinite(magnitudes) & (magnitudes > FP16_MAX)
            if beyond.any() and not beyond.all():
                raise NotCompressible(
                    f"{op.get_friendly_name()} has {int(beyond.sum())} values beyond fp16's range (up to "
                    f"{float(magnitudes[beyond].max()):.3g})"
                )
    return model
