"""Session backends: a graph opened for its precision, in ONNX Runtime (fp32, int8, int4, fp16;
on CUDA where this onnxruntime has it and the precision has kernels there) or in OpenVINO (bf16
and w8a8, openvino_session.py). Which precision a machine serves is engine_choice.py's decision."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.engine_choice import Machine
from rewardserve.bundle.manifest import OPENVINO_PRECISIONS, Precision
from rewardserve.bundle.openvino_session import OpenVinoSession

CUDA = "CUDAExecutionProvider"


def providers_for(precision: Precision) -> list[str]:
    """fp32 and fp16 graphs run on CUDA when this onnxruntime has it. int8 and int4 graphs stay on
    the CPU: dynamic int8 has no CUDA kernels, and int4 with fp32 activations is a CPU memory option."""
    cuda = CUDA in ort.get_available_providers() and precision not in ("int8", "int4")
    return [CUDA, "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def session_options(threads: int | None = None, arena: bool = True) -> ort.SessionOptions:
    """One call uses every CPU the process may use (quota-aware), and nothing more: the server
    runs one engine call at a time, so inter-op parallelism would only oversubscribe.

    `arena`: onnxruntime keeps the memory of its largest batch for the next. The server's batches
    are bounded by MAX_BATCH_TOKENS; export's offline passes run a large model's longest batches
    once each, and without the arena give that memory back (a 0.6B decoder at 8 x 1024 tokens:
    7.4 GB kept with it, 2.0 GB after the batch without it, 12% slower)."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def open_session(
    graph: Path, precision: Precision, threads: int | None = None, arena: bool = True
) -> ort.InferenceSession | OpenVinoSession:
    """The session for `graph` at `precision`: bf16 and w8a8 in OpenVINO (a w8a8 graph's int8
    products in int8, its other nodes at bf16 where the CPU has it), the others in ONNX Runtime on
    the providers that have kernels for them."""
    if precision in OPENVINO_PRECISIONS:
        computes = "bf16" if precision == "bf16" else Machine.this().openvino_precision
        return OpenVinoSession(graph, threads or available_cpus(), computes)
    options = session_options(threads, arena)
    return ort.InferenceSession(str(graph), options, providers=providers_for(precision))
