"""Reduced-precision graphs (int8 for CPU, fp16 for GPU) and the gate they must pass.

A reward model is used to rank, so the gate asks what a user would: on held-out human
preference pairs, does the smaller graph still order the two responses as the fp32 graph does,
and does it still agree with the humans as often?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from rewardserve.bundle.manifest import Agreement
from rewardserve.eval.metrics import ranking_accuracy
from rewardserve.export.graph import data_file, save

MIN_DECISIONS_MATCHING = 0.99
MAX_ACCURACY_DROP = 0.005


class PrecisionRefused(RuntimeError):
    """The reduced-precision graph changes too many of the fp32 graph's decisions."""

    def __init__(self, precision: str, agreement: Agreement) -> None:
        self.agreement = agreement
        super().__init__(
            f"{precision} refused: on {agreement.pairs} held-out pairs it orders "
            f"{agreement.decisions_matching:.2%} the way fp32 does (at least {MIN_DECISIONS_MATCHING:.0%} needed) "
            f"with accuracy {agreement.accuracy:.4f} against fp32's {agreement.accuracy_fp32:.4f} "
            f"(a drop of at most {MAX_ACCURACY_DROP * 100:.1f} points allowed)"
        )


def quantize_int8(fp32: Path, out: Path) -> None:
    """Dynamic int8: weights quantised per output channel ahead of time, activations per batch
    at run time, so no calibration data is needed and every sequence length works."""
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
