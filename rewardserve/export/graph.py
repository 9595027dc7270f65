"""The ONNX graph: tracing a reward model, saving it (as external data past 2 GB), fusing it.

Every step writes a file that ONNX Runtime can load on its own, so each one can be checked
for parity before the next builds on it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch

from rewardserve.bundle.manifest import GraphInfo
from rewardserve.bundle.outputs import STEP_REWARDS
from rewardserve.export.source import ExportSource

OPSET = 18
GRAPH_FILE = "model.onnx"
# Protobuf cannot serialise a message over 2 GiB, so larger graphs keep their weights in a
# side file; the margin leaves room for the graph's own structure.
EXTERNAL_DATA_LIMIT = 2**31 - 2**26

# onnxruntime.transformers fusion passes per architecture (attention, LayerNorm, GELU, RMSNorm,
# rotary embeddings); an architecture not listed is left to ONNX Runtime's built-in passes.
OPTIMIZER_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "distilbert": "bert",
    "deberta": "bert",
    "deberta-v2": "bert",
    "gpt2": "gpt2",
    "llama": "qwen3",  # RoPE + grouped-query attention + RMSNorm, as Qwen3
    "mistral": "qwen3",
    "qwen2": "qwen3",
    "qwen3": "qwen3",
}


def trace(source: ExportSource, example: dict[str, np.ndarray], path: Path) -> None:
    """Trace the reward function to ONNX at `path`, with dynamic batch and sequence axes."""
    names = source.input_format.input_names
    args = tuple(torch.from_numpy(example[n]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    outputs = source.outputs.graph_outputs()
    # Step rewards have one value per position; the others one (or one per objective) per sequence.
    axes |= {n: {0: "batch", 1: "sequence"} if n == STEP_REWARDS else {0: "batch"} for n in outputs}
    # The exporter writes a large model's tensors as loose files beside the graph: keep them apart.
    with (
        tempfile.TemporaryDirectory(dir=path.parent) as scratch,
        warnings.catch_warnings(),
        torch.inference_mode(),
        _eager_attention(source.model),
    ):
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        raw = Path(scratch) / GRAPH_FILE
        torch.onnx.export(
            source.reward,
            args,
            str(raw),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        save(onnx.load(str(raw)), path)


@contextlib.contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """onnxruntime fuses attention from transformers' eager pattern (MatMul, scale, mask Add,
    Softmax, MatMul); a traced scaled_dot_product_attention matches none of its fusions."""
    model = getattr(model, "backbone", model)  # rewardserve's own models wrap a transformers encoder
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def move(graph: Path, directory: Path) -> None:
    """Move `graph` and its external data (if any; an OpenVINO graph's .bin) into `directory`
    without reading either: a graph names its data file, so both keep their names."""
    for file in (graph, data_file(graph), graph.with_suffix(".bin") if graph.suffix == ".xml" else graph):
        if file.exists():
            file.replace(directory / file.name)


def save(model: onnx.ModelProto, path: Path) -> bool:
    """Write `model` to `path`; weights go to `<path>.data` when the graph is too large for
    one protobuf file. True when they did."""
    external = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_LIMIT
    data = data_file(path)
    data.unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=external, location=data.name, size_threshold=1024)
    return external


def data_file(graph: Path) -> Path:
    """Where the weights of `graph` are when they are external data."""
    return graph.with_name(f"{graph.name}.data")


def optimize(source: ExportSource, traced: Path, out: Path) -> GraphInfo:
    """Fuse the traced graph with onnxruntime's transformer optimizer into `out`.

    Returns what was fused, or raises for the caller to fall back to the traced graph.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = OPTIMIZER_MODEL_TYPES.get(source.model_type)
    if model_type is None:
        raise NotImplementedError(f"onnxruntime has no fusion patterns for {source.model_type}")
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimized = optimize_model(
        str(traced), model_type=model_type, num_heads=source.num_heads, hidden_size=source.hidden_size
    )
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    external = save(optimized.model, out)
    return GraphInfo(opset=OPSET, optimizer=model_type, fused_operators=fused, external_data=external)
