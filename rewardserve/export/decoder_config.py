"""What the decoder graphs (decoder_graph.py) read of a transformers config: head size, MLP
activation, rotary parameters by layer type."""

from __future__ import annotations

GEMMA = ("gemma2", "gemma3_text")
ACTIVATIONS = {"silu": "SwiGLU", "gelu_pytorch_tanh": "GeGLU"}  # the MLPs written here


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def activation(config) -> str | None:
    return getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)


def rope_parameters(config) -> dict[str, dict]:
    """The rotary parameters of each layer type ("full_attention", "sliding_attention"): Gemma 3
    gives its sliding layers their own base; other models have one set for every layer."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if all(isinstance(value, dict) for value in rope.values()) and rope:
        return rope
    return {"full_attention": rope}
