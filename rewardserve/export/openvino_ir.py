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
from pathlib import Path

import numpy as np

from rewardserve.bundle.openvino_session import find_head
from rewardserve.bundle.past import PAST, PRESENT, EmptyPast

FP16_MAX = 65504.0
SMOOTH_QUANT_ALPHA = 0.5  # write_w8a8_graph says why


class NotCompressible(ValueError):
    """A weight fp16 cannot hold: OpenVINO's compression would clamp it silently."""


def write_bf16_graph(graph: Path, out: Path) -> Path:
    """`graph` (an ONNX file OpenVINO reads) as an IR at `out` (…xml, and its .bin), weights in
    fp16; NotCompressible when a weight has values beyond fp16's range beside values within it
    (OpenVINO would clamp those to 65504; a constant wholly beyond it, a mask's floor, stays fp32)."""
    import openvino as ov

    ov.save_model(_compressible(graph), str(out), compress_to_fp16=True)
    return out


def write_w8a8_graph(graph: Path, out: Path, samples: Sequence[dict[str, np.ndarray]]) -> Path:
    """`graph` as an IR at `out` whose matrix products read int8 weights (per output channel) and
    int8 activations, their ranges calibrated on `samples` (the graph's feeds: held-out
    conversations in the model's own format) by NNCF's post-training quantization for
    transformers, SmoothQuant first: it moves the activations' outlier channels into the weights,
    which an int8 activation range cannot hold otherwise. The reward head (pooling, projection, an
    objectives rule) is left out: it is a few operations, and the reward is read from it. The
    other weights are stored as fp16, as bf16's are; NotCompressible as for bf16.

    SmoothQuant's migration strength is SMOOTH_QUANT_ALPHA, not NNCF's default for transformers
    (0.95): on the tests' trained Qwen3-shaped decoder, 32 held-out HH examples calibrating, 541
    other pairs gated, 0.95 kept 99.26% of fp32's decisions but lost 0.74 points of accuracy (the
    gate allows 0.5); 0.5, the SmoothQuant paper's, kept 99.63% at fp32's accuracy; no SmoothQuant
    kept 98.89%."""
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)  # it logs every node it leaves alone
    model = _compressible(graph)
    scored = [r for r in model.get_results() if not any(n.startswith(PRESENT) for n in r.input_value(0).get_names())]
    head, _ = find_head(scored)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(_feeds(model, samples)),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(names=sorted(head), validate=False),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
        ),
    )
    ov.save_model(quantized, str(out), compress_to_fp16=True)
    return out


def _feeds(model, samples: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """What `model` reads for each sample (a padded batch's arrays): a prefix graph's whole
    sequences after an empty past, as the server runs them."""
    names = {name for port in model.inputs for name in port.get_names()}
    shapes = {
        port.get_any_name(): [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        for port in model.inputs
        if port.get_any_name().startswith(PAST)
    }
    whole = EmptyPast(shapes, np.dtype(np.float32)) if shapes else dict
    return [{name: array for name, array in whole(sample).items() if name in names} for sample in samples]


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
