"""Which precision a bundle runs at on this machine, and why: the one place that decides.

A bundle holds its fp32 graph and the reduced-precision variants that passed the agreement gate
at export (`Manifest.variants`). This module weighs them against what the machine can run well:

- fp16 needs CUDA (onnxruntime-gpu);
- bf16 runs the fp32 graph through OpenVINO with bf16 inference precision, and needs a CPU with
  bf16 instructions (`amx_bf16` or `avx512_bf16`): elsewhere it would be emulated, and slow;
- w8a8 (int8 weights and int8 activations calibrated at export, NNCF's static quantization, run
  by OpenVINO: its other nodes at bf16 where the CPU has it) needs int8 dot-product instructions
  (VNNI or AMX int8) and OpenVINO. Export ships it to `auto` only where it passed the agreement
  gate and ran faster than the other variants there (export/precision.py);
- int8 (dynamic quantisation, onnxruntime's CPU provider) needs int8 dot-product instructions
  (VNNI or AMX int8);
- int4 (4-bit weights in blocks, MatMulNBits, fp32 activations) runs on any CPU, in a quarter
  of fp32's memory but no faster: `auto` never picks it, it is served when asked for by name;
- fp32 runs everywhere, and is what every other figure is checked against.

`auto` takes the first of these orders that the bundle offers and the machine runs. The CPU
order is measured (`benchmarks/engine_speed.py`, docs/train-export.md): on 2 cores of a Xeon with
AMX, the default model scores held-out HH pairs at 60 seq/s in fp32 (onnxruntime), 105 in
dynamic int8 and 250 in bf16 (OpenVINO); static QDQ int8 ran at 71 (onnxruntime) and 137
(OpenVINO) and kept only 88% of fp32's decisions. A Qwen3-0.6B-shaped decoder
(`benchmarks/decoder_engines.py`): 258 tokens/s in fp32, 744 in dynamic int8, 992 in bf16, 245
with int4 weights. With calibrated int8 activations (w8a8), the 0.6B decoder's graph ran 1.31x its
bf16 graph through the serving engine (benchmarks/int8_static.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import onnxruntime as ort

from rewardserve.bundle.cpus import cpu_description
from rewardserve.bundle.manifest import Precision

RequestedPrecision = Literal["auto", "fp32", "fp16", "bf16", "w8a8", "int8", "int4"]

AUTO_ORDER_GPU: tuple[Precision, ...] = ("fp16", "fp32")
AUTO_ORDER_CPU: tuple[Precision, ...] = ("w8a8", "bf16", "int8", "fp32")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


class PrecisionUnavailable(ValueError):
    """A precision that was asked for by name, and that this bundle or this machine cannot run."""


@dataclass(frozen=True)
class Machine:
    """What a machine offers the engines: its CPU and whether CUDA and OpenVINO are there."""

    cpu_model: str
    cpu_flags: frozenset[str]
    cuda: bool
    openvino: bool

    @classmethod
    def this(cls) -> Machine:
        model, flags = cpu_description()
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        return cls(model, flags, cuda, openvino=importlib.util.find_spec("openvino") is not None)

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.cpu_flags for flag in BF16_FLAGS)

    def cannot_run(self, precision: Precision) -> str | None:
        """Why this machine cannot run `precision` well, or None when it can."""
        if precision == "fp16" and not self.cuda:
            return "fp16 runs on CUDA, and this onnxruntime has no CUDA provider"
        if precision == "bf16":
            if not self.native_bf16:
                return f"this CPU has no bf16 instructions ({' or '.join(BF16_FLAGS)}): bf16 would be emulated"
            if not self.openvino:
                return "bf16 runs on OpenVINO, which is not installed (pip install openvino)"
        if precision in ("int8", "w8a8") and not any(flag in self.cpu_flags for flag in INT8_FLAGS):
            # Without them onnxruntime takes a u8s8 AVX2 path that can saturate: not what the gate measured;
            # OpenVINO would emulate the int8 products.
            return f"this CPU has no int8 dot-product instructions ({', '.join(INT8_FLAGS)})"
        if precision == "w8a8" and not self.openvino:
            return "w8a8 runs on OpenVINO, which is not installed (pip install openvino)"
        return None

    @property
    def openvino_precision(self) -> str:
        """What OpenVINO computes a w8a8 graph's unquantized nodes in: bf16 where the CPU has it."""
        return "bf16" if self.native_bf16 else "f32"

    def describe(self) -> str:
        """The CPU model and the flags that matter here, for logs and benchmark figures."""
        flags = [f for f in (*BF16_FLAGS, "amx_int8", "avx512_vnni", "avx_vnni", "avx512f") if f in self.cpu_flags]
        return f"{self.cpu_model} ({' '.join(flags) or 'none of amx, avx512_bf16, vnni, avx512f'})" + (
            ", CUDA" if self.cuda else ""
        )


@dataclass(frozen=True)
class EngineChoice:
    precision: Precision
    reason: str


def choose(requested: RequestedPrecision, offered: Mapping[Precision, str | None], machine: Machine) -> EngineChoice:
    """The precision to serve at. `offered` maps each precision the bundle has a record of to
    None when it may be served, or to why not (its gate refused it, say).

    A precision asked for by name is served or refused with the reason (PrecisionUnavailable);
    `auto` takes the fastest one offered that this machine runs, and says why it passed over
    the faster ones. `offered` always holds the precision of the bundle's own graph.
    """
    if requested != "auto":
        why_not = _why_not(requested, offered, machine)
        if why_not:
            raise PrecisionUnavailable(f"precision {requested} cannot be served: {why_not}")
        return EngineChoice(requested, f"{requested} asked for")
    order = AUTO_ORDER_GPU if machine.cuda else AUTO_ORDER_CPU
    passed_over = []
    for precision in order:
        why_not = _why_not(precision, offered, machine)
        if why_not is None:
            return EngineChoice(precision, "; ".join([f"auto, fastest first: {', '.join(order)}", *passed_over]))
        passed_over.append(f"not {precision}: {why_not}")
    # A bundle of one reduced graph (from before variants, e.g. fp16 on a CPU machine): run it as
    # it is, and say that it runs slowly here, rather than not at all.
    only = next(precision for precision, why_not in offered.items() if why_not is None)
    slow = f" ({why}, so it runs slowly here)" if (why := machine.cannot_run(only)) else ""
    return EngineChoice(only, f"auto: {only}, the only precision this bundle has{slow}")


def _why_not(precision: Precision, offered: Mapping[Precision, str | None], machine: Machine) -> str | None:
    if precision not in offered:
        return f"the bundle has no {precision} variant"
    return offered[precision] or machine.cannot_run(precision)
