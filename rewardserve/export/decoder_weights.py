"""A decoder's weights, written once into the data file every graph flavor reads (decoder_graph.py):
each tensor page-aligned, so it can be mapped in place; the rotary tables beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper

from rewardserve.bundle import InputFormat
from rewardserve.export.decoder_config import GEMMA, rope_parameters

ALIGNMENT = 4096  # each weight starts on a page in the data file, so it can be mapped in place


class WeightFile:
    """Weights appended to one external data file; each comes back as a TensorProto that only
    points into the file, so no graph ever holds weight bytes in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def __enter__(self) -> WeightFile:
        self.file = self.path.open("wb")
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def add(self, name: str, tensor: torch.Tensor, transpose: bool = False) -> TensorProto:
        array = tensor.detach().to(torch.float32)
        return self.add_array(name, (array.T if transpose else array).numpy())

    def add_array(self, name: str, array: np.ndarray) -> TensorProto:
        array = np.ascontiguousarray(array)
        padding = -self.offset % ALIGNMENT
        self.file.write(b"\0" * padding)
        self.offset += padding
        self.file.write(array.tobytes())
        proto = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", self.offset), ("length", array.nbytes)):
            proto.external_data.add(key=key, value=str(value))
        self.offset += array.nbytes
        return proto


def linear_weights(weights: WeightFile, name: str, linear: torch.nn.Linear) -> list[TensorProto]:
    """A Linear as MatMul's right operand ([in, out]) and its bias, if any."""
    tensors = [weights.add(f"{name}.weight", linear.weight, transpose=True)]
    if linear.bias is not None:
        tensors.append(weights.add(f"{name}.bias", linear.bias))
    return tensors


def norm_weight(weights: WeightFile, name: str, norm: torch.nn.Module, gemma: bool) -> list[TensorProto]:
    """An RMSNorm's scale as the normalized input is multiplied by it: Gemma's norms multiply by
    (1 + weight), computed here in fp32 as Gemma does."""
    return [weights.add(name, 1.0 + norm.weight.float() if gemma else norm.weight)]


def layer_weights(weights: WeightFile, layer: torch.nn.Module, gemma: bool) -> dict[str, list[TensorProto]]:
    index = layer.self_attn.layer_idx
    attention, mlp = layer.self_attn, layer.mlp
    prefix = f"layers.{index}"
    norms = {"input_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm"}
    if gemma:  # and around the MLP
        norms |= {
            "pre_feedforward_norm": "pre_feedforward_layernorm",
            "post_feedforward_norm": "post_feedforward_layernorm",
        }
    tensors = {
        name: norm_weight(weights, f"{prefix}.{name}", getattr(layer, module), gemma) for name, module in norms.items()
    }
    for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
        tensors[part] = linear_weights(weights, f"{prefix}.{part}", getattr(attention, part))
    for part in ("q_norm", "k_norm"):  # Qwen3, Gemma 3: RMSNorm over each head, before rotary
        if hasattr(attention, part):
            tensors[part] = norm_weight(weights, f"{prefix}.{part}", getattr(attention, part), gemma)
    for part in ("gate_proj", "up_proj", "down_proj"):
        tensors[part] = linear_weights(weights, f"{prefix}.{part}", getattr(mlp, part))
    return tensors


def shared_weights(weights: WeightFile, model: torch.nn.Module, fmt: InputFormat) -> dict[str, list[TensorProto]]:
    base, gemma = model.base_model, model.config.model_type in GEMMA
    positions = torch.arange(fmt.max_length)[None]
    tensors = {
        "embed": [weights.add("embed_tokens", base.embed_tokens.weight)],
        "norm": norm_weight(weights, "norm", base.norm, gemma),
        "score": linear_weights(weights, "score", model.score),
    }
    # The model's own rotary module computes the tables, so its scaling (llama3, yarn, ...) and
    # attention factor are the ones the model uses; one pair of tables per rotary base.
    rope_kinds = rope_parameters(model.config)
    for kind in rope_kinds:
        with torch.no_grad():
            x = torch.zeros(1, dtype=torch.float32)
            cos, sin = base.rotary_emb(x, positions, kind) if len(rope_kinds) > 1 else base.rotary_emb(x, positions)
        half = cos.shape[-1] // 2
        tensors[f"cos_cache_{kind}"] = [weights.add(f"cos_cache_{kind}", cos[0, :, :half])]
        tensors[f"sin_cache_{kind}"] = [weights.add(f"sin_cache_{kind}", sin[0, :, :half])]
    return tensors
