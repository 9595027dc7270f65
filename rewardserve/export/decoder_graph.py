"""Decoder reward graphs written from the weights, with onnxruntime's fused operators.

Tracing a 0.6B decoder holds the model several times over (the traced graph, onnx's copy, the
optimizer's copy) and yields attention that onnxruntime's optimizer cannot fuse: rotary
embeddings, grouped-query repeats and the attention matmuls stay separate nodes. The Llama
family (Llama, Mistral, Qwen2, Qwen3) and Gemma 2/3 are regular enough to write down instead, as
onnxruntime-genai's model builder does for generation:

    embed -> N x [RMSNorm -> q, k, v (-> q/k RMSNorm, Qwen3) -> attention with rotary -> o
                  -> residual + RMSNorm -> SwiGLU MLP] -> residual + RMSNorm -> score head

Gemma 2/3 differ in ways each written where it applies: embeddings scaled by sqrt(hidden), norms
that multiply by (1 + weight), a norm after attention and after the MLP as well as before
them, a GeGLU MLP (tanh GELU), attention scaled by query_pre_attn_scalar, logits soft-capped
(Gemma 2), q/k norms (Gemma 3), and sliding-window layers (with their own rotary base in
Gemma 3) beside global ones.

read at each row's last real token, the position LastTokenReward reads (source.py); a head of N
objectives answers them beside the reward their rule makes, and a token classifier (a process
reward model) answers its step class's probability at every position. Every weight
is streamed to one external data file as it is written, so memory stays about one copy of the
model (the PyTorch one export already holds).

Two graphs share that data file:
- `fused` (model.onnx): GroupQueryAttention with rotary inside and SimplifiedLayerNormalization /
  SkipSimplifiedLayerNormalization, onnxruntime's contrib operators with CPU and CUDA kernels.
  GroupQueryAttention reads right-padded rows by their lengths, so the bundle pads on the right.
- `portable`: the same model with attention in standard operators (MatMul, Softmax, an explicit
  causal and padding mask), for engines without onnxruntime's contrib attention: OpenVINO (bf16
  on CPU) reads it and fuses scaled-dot-product attention and rotary by itself. It is also
  model.onnx itself when the fused attention cannot run the model (the reason is recorded).

A model outside what is written here raises NotBuildable with the reason, and export traces it
as before (fp32_graph.py), recording that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from rewardserve.bundle import InputFormat
from rewardserve.bundle.outputs import ModelOutputs
from rewardserve.export.decoder_config import ACTIVATIONS, GEMMA, activation, head_dim, rope_parameters
from rewardserve.export.decoder_weights import WeightFile, layer_weights, shared_weights
from rewardserve.export.decoder_writer import Flavor, GraphWriter, count_fused

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", *GEMMA)
GRAPH_FILE = "model.onnx"
PORTABLE_FILE = "model.portable.onnx"
DATA_FILE = "model.onnx.data"  # both flavors read it: graph.data_file(model.onnx)
# onnxruntime's CPU GroupQueryAttention kernel takes head sizes in multiples of 16.
GQA_HEAD_MULTIPLE = 16

PREFIX_FILE = "model.prefix.onnx"
# The prefix graph in standard operators (attention over the past's keys and values followed by
# the chunk's, an explicit mask): OpenVINO reads it at bf16, as it reads the portable flavor.
PORTABLE_PREFIX_FILE = "model.prefix.portable.onnx"


class NotBuildable(ValueError):
    """This model has something the builder does not write; the reason says what."""


@dataclass(frozen=True)
class BuiltGraphs:
    graph: Path  # what onnxruntime serves: the fused flavor, or the portable one when it cannot be fused
    portable: Path  # what OpenVINO reads; `graph` itself when that is portable
    fused_operators: dict[str, int]
    why_unfused: str | None = None
    prefix: Path | None = None  # with `prefix`: the graph that reads and answers keys and values (Part)
    portable_prefix: Path | None = None  # the same in standard operators, for OpenVINO


def build(
    model: torch.nn.Module, fmt: InputFormat, out: Path, outputs: ModelOutputs | None = None, prefix: bool = False
) -> BuiltGraphs:
    """Write the reward graphs of `model` (a *ForSequenceClassification of FAMILIES, or a
    *ForTokenClassification for step rewards) into the directory `out`, for inputs in `fmt`
    (right padding; position ids, if declared, are not read), answering what `outputs` declares;
    with `prefix`, the fused graph with past keys and values too (Part), where it can be fused."""
    config = model.config
    outputs = outputs or ModelOutputs()
    _check_supported(config, fmt)
    if outputs.gated:
        raise NotBuildable("a gated head is the checkpoint's own code; it is traced")
    out.mkdir(parents=True, exist_ok=True)
    gemma = config.model_type in GEMMA
    with WeightFile(out / DATA_FILE) as weights:
        layers = [layer_weights(weights, layer, gemma) for layer in model.base_model.layers]
        shared = shared_weights(weights, model, fmt)
    why_unfused = None
    if head_dim(config) % GQA_HEAD_MULTIPLE:
        why_unfused = (
            f"head size {head_dim(config)} is not a multiple of {GQA_HEAD_MULTIPLE}, "
            "which onnxruntime's GroupQueryAttention kernel needs"
        )
    flavors: list[tuple[Flavor, Path]] = [("portable", out / (GRAPH_FILE if why_unfused else PORTABLE_FILE))]
    if not why_unfused:
        flavors.append(("fused", out / GRAPH_FILE))
    fused_operators = {}
    for flavor, path in flavors:
        proto = GraphWriter(config, fmt, flavor, outputs).model(shared, layers)
        onnx.save_model(proto, str(path))
        fused_operators = count_fused(proto)  # the last written is model.onnx
    prefixes: dict[Flavor, Path] = {}
    for flavor, file in (("fused", PREFIX_FILE), ("portable", PORTABLE_PREFIX_FILE)) if prefix else ():
        if flavor == "portable" or not why_unfused:
            prefixes[flavor] = out / file
            onnx.save_model(GraphWriter(config, fmt, flavor, outputs, "prefix").model(shared, layers), str(out / file))
    return BuiltGraphs(
        out / GRAPH_FILE, flavors[0][1], fused_operators, why_unfused, prefixes.get("fused"), prefixes.get("portable")
    )


def _check_supported(config, fmt: InputFormat) -> None:
    if config.model_type not in FAMILIES:
        raise NotBuildable(f"{config.model_type} is not one of the families written here ({', '.join(FAMILIES)})")
    if fmt.padding_side != "right":
        raise NotBuildable("the built graph reads rows by their lengths and needs right padding")
    if fmt.token_type_ids:
        raise NotBuildable("decoders take no segment ids")
    if (act := activation(config)) not in ACTIVATIONS:
        raise NotBuildable(f"activation {act}: only {' and '.join(ACTIVATIONS.values())} MLPs are written here")
    for rope in rope_parameters(config).values():
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        # The tables are computed once for every position; dynamic NTK and LongRoPE change them
        # with the length of the sequence at run time.
        if rope_type not in ("default", "linear", "llama3", "yarn"):
            raise NotBuildable(f"rotary scaling {rope_type!r} depends on the sequence length at run time")
    if (partial := getattr(config, "partial_rotary_factor", 1.0)) != 1.0:
        raise NotBuildable(f"partial rotary embeddings (factor {partial})")
    if getattr(config, "use_bidirectional_attention", False):
        raise NotBuildable("bidirectional attention")
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    sliding = "sliding_attention" in kinds or (config.model_type == "mistral" and window)
    # Gemma's sliding layers are written with their window; other families' windows (Mistral's
    # on every layer, Qwen2's above max_window_layers) are not.
    if sliding and window and window < fmt.max_length and config.model_type not in GEMMA:
        raise NotBuildable(f"sliding-window attention ({window} tokens) shorter than max_length {fmt.max_length}")
