"""The bf16 variant's graph: the fp32 ONNX graph written in OpenVINO's own format (IR), its
weights stored as fp16.

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

from pathlib import Path

FP16_MAX = 65504.0


class NotCompressible(ValueError):
    """A weight fp16 cannot hold: OpenVINO's compression would clamp it silently."""


def write_bf16_graph(graph: Path, out: Path) -> Path:
    """`graph` (an ONNX file OpenVINO reads) as an IR at `out` (…xml, and its .bin), weights in
    fp16; NotCompressible when a weight has values beyond fp16's range beside values within it
    (OpenVINO would clamp those to 65504; a constant wholly beyond it, a mask's floor, stays fp32)."""
    import numpy as np
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
    ov.save_model(model, str(out), compress_to_fp16=True)
    return out
