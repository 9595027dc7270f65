"""Decoder reward graphs written from the weights, with onnxruntime's fused operators.

Tracing a 0.6B decoder holds the model several times over (the traced graph, onnx's copy, the
optimizer's copy) and yields attention that onnxruntime's optimizer cannot fuse: rotary
embeddings, grouped-query repeats and the attention matmuls stay separate nodes. The Llama
family (Llama, Mistral, Qwen2, Qwen3) is regular enough to write down instead, as
onnxruntime-genai's model builder does for generation:

    embed -> N x [RMSNorm -> q, k, v (-> q/k RMSNorm, Qwen3) -> attention with rotary -> o
                  -> residual + RMSNorm -> SwiGLU MLP] -> residual + RMSNorm -> score head

read at each row's last real token, the position LastTokenReward reads (source.py). Every weight
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
as before (onnx_export.py), recording that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from rewardserve.bundle import InputFormat

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
OPSET = 18
MS = "com.microsoft"
GRAPH_FILE = "model.onnx"
PORTABLE_FILE = "model.portable.onnx"
DATA_FILE = "model.onnx.data"  # both flavors read it: graph.data_file(model.onnx)
# onnxruntime's CPU GroupQueryAttention kernel takes head sizes in multiples of 16.
GQA_HEAD_MULTIPLE = 16
ALIGNMENT = 4096  # each weight starts on a page in the data file, so it can be mapped in place

Flavor = Literal["fused", "portable"]


class NotBuildable(ValueError):
    """This model has something the builder does not write; the reason says what."""


@dataclass(frozen=True)
class BuiltGraphs:
    graph: Path  # what onnxruntime serves: the fused flavor, or the portable one when it cannot be fused
    portable: Path  # what OpenVINO reads; `graph` itself when that is portable
    fused_operators: dict[str, int]
    why_unfused: str | None = None


def build(model: torch.nn.Module, fmt: InputFormat, out: Path) -> BuiltGraphs:
    """Write the reward graphs of `model` (a *ForSequenceClassification of FAMILIES) into the
    directory `out`, for inputs in `fmt` (right padding; position ids, if declared, are not read)."""
    config = model.config
    _check_supported(config, fmt)
    out.mkdir(parents=True, exist_ok=True)
    with _WeightFile(out / DATA_FILE) as weights:
        layers = [_layer_weights(weights, layer) for layer in model.base_model.layers]
        shared = _shared_weights(weights, model, fmt)
    why_unfused = None
    if _head_dim(config) % GQA_HEAD_MULTIPLE:
        why_unfused = (
            f"head size {_head_dim(config)} is not a multiple of {GQA_HEAD_MULTIPLE}, "
            "which onnxruntime's GroupQueryAttention kernel needs"
        )
    flavors: list[tuple[Flavor, Path]] = [("portable", out / (GRAPH_FILE if why_unfused else PORTABLE_FILE))]
    if not why_unfused:
        flavors.append(("fused", out / GRAPH_FILE))
    fused_operators = {}
    for flavor, path in flavors:
        proto = _Writer(config, fmt, flavor).model(shared, layers)
        onnx.save_model(proto, str(path))
        fused_operators = _count(proto)  # the last written is model.onnx
    return BuiltGraphs(out / GRAPH_FILE, flavors[0][1], fused_operators, why_unfused)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _check_supported(config, fmt: InputFormat) -> None:
    if config.model_type not in FAMILIES:
        raise NotBuildable(f"{config.model_type} is not one of the families written here ({', '.join(FAMILIES)})")
    if fmt.padding_side != "right":
        raise NotBuildable("the built graph reads rows by their lengths and needs right padding")
    if fmt.token_type_ids:
        raise NotBuildable("decoders take no segment ids")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise NotBuildable(f"activation {config.hidden_act}: only SwiGLU (silu) is written here")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    # The tables are computed once for every position; dynamic NTK and LongRoPE change them with
    # the length of the sequence at run time.
    if rope_type not in ("default", "linear", "llama3", "yarn"):
        raise NotBuildable(f"rotary scaling {rope_type!r} depends on the sequence length at run time")
    if (partial := getattr(config, "partial_rotary_factor", 1.0)) != 1.0:
        raise NotBuildable(f"partial rotary embeddings (factor {partial})")
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    sliding = "sliding_attention" in kinds or (config.model_type == "mistral" and window)
    if sliding and window and window < fmt.max_length:
        raise NotBuildable(f"sliding-window attention ({window} tokens) shorter than max_length {fmt.max_length}")


class _WeightFile:
    """Weights appended to one external data file; each comes back as a TensorProto that only
    points into the file, so no graph ever holds weight bytes in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def __enter__(self) -> _WeightFile:
        self.file = self.path.open("wb")
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def add(self, name: str, tensor: torch.Tensor, transpose: bool = False) -> TensorProto:
        array = tensor.detach().to(torch.float32)
        array = np.ascontiguousarray((array.T if transpose else array).numpy())
        padding = -self.offset % ALIGNMENT
        self.file.write(b"\0" * padding)
        self.offset += padding
        self.file.write(array.tobytes())
        proto = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", self.offset), ("length", array.nbytes)):
            proto.external_data.add(key=key, value=str(value))
        self.offset += array.nbytes
        return proto


def _linear(weights: _WeightFile, name: str, linear: torch.nn.Linear) -> list[TensorProto]:
    """A Linear as MatMul's right operand ([in, out]) and its bias, if any."""
    tensors = [weights.add(f"{name}.weight", linear.weight, transpose=True)]
    if linear.bias is not None:
        tensors.append(weights.add(f"{name}.bias", linear.bias))
    return tensors


def _layer_weights(weights: _WeightFile, layer: torch.nn.Module) -> dict[str, list[TensorProto]]:
    index = layer.self_attn.layer_idx
    attention, mlp = layer.self_attn, layer.mlp
    prefix = f"layers.{index}"
    tensors = {
        "input_norm": [weights.add(f"{prefix}.input_norm", layer.input_layernorm.weight)],
        "post_attention_norm": [weights.add(f"{prefix}.post_attention_norm", layer.post_attention_layernorm.weight)],
    }
    for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
        tensors[part] = _linear(weights, f"{prefix}.{part}", getattr(attention, part))
    for part in ("q_norm", "k_norm"):  # Qwen3: RMSNorm over each head, before rotary
        if hasattr(attention, part):
            tensors[part] = [weights.add(f"{prefix}.{part}", getattr(attention, part).weight)]
    for part in ("gate_proj", "up_proj", "down_proj"):
        tensors[part] = _linear(weights, f"{prefix}.{part}", getattr(mlp, part))
    return tensors


def _shared_weights(weights: _WeightFile, model: torch.nn.Module, fmt: InputFormat) -> dict[str, list[TensorProto]]:
    base = model.base_model
    positions = torch.arange(fmt.max_length)[None]
    # The model's own rotary module computes the tables, so its scaling (llama3, yarn, ...) and
    # attention factor are the ones the model uses.
    with torch.no_grad():
        cos, sin = base.rotary_emb(torch.zeros(1, dtype=torch.float32), positions)
    half = cos.shape[-1] // 2
    return {
        "embed": [weights.add("embed_tokens", base.embed_tokens.weight)],
        "norm": [weights.add("norm", base.norm.weight)],
        "score": _linear(weights, "score", model.score),
        "cos_cache": [weights.add("cos_cache", cos[0, :, :half])],
        "sin_cache": [weights.add("sin_cache", sin[0, :, :half])],
    }


class _Writer:
    """The nodes of one graph flavor. Names follow the data: each step's output names the next
    step's input."""

    def __init__(self, config, fmt: InputFormat, flavor: Flavor) -> None:
        self.config, self.fmt, self.flavor = config, fmt, flavor
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = _head_dim(config)
        self.eps = float(config.rms_norm_eps)
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[TensorProto] = []
        self.constant_names: set[str] = set()
        self.count = 0

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, domain: str = "", **attrs) -> list[str]:
        self.count += 1
        names = [f"{op_type.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, domain=domain, **attrs))
        return names

    def one(self, op_type: str, *inputs: str, domain: str = "", **attrs) -> str:
        return self.op(op_type, list(inputs), 1, domain, **attrs)[0]

    def const(self, name: str, value: np.ndarray) -> str:
        """A named constant, added once however many nodes read it."""
        if name not in self.constant_names:
            self.constant_names.add(name)
            self.constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, name: str, value: int | list[int]) -> str:
        """An int64 constant: a scalar or a 1-D tensor."""
        return self.const(name, np.array(value, np.int64))

    def model(
        self, shared: dict[str, list[TensorProto]], layers: list[dict[str, list[TensorProto]]]
    ) -> onnx.ModelProto:
        self.weights = {t.name: t for group in [shared, *layers] for tensors in group.values() for t in tensors}
        inputs = [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in self.fmt.input_names
        ]
        hidden = self.one("Gather", "embed_tokens", "input_ids")
        length = self.one("Squeeze", self.one("Shape", "input_ids", start=1, end=2), self.ints("axis_0", [0]))
        self.positions = self.one("Range", self.ints("zero_i64", 0), length, self.ints("one_i64", 1))
        self.rows = self._row_inputs(length)
        residual = None
        for index, layer in enumerate(layers):
            x, residual = self._norm(hidden, residual, f"layers.{index}.input_norm")
            attention = self._attention(x, layer)
            x, residual = self._norm(attention, residual, f"layers.{index}.post_attention_norm")
            hidden = self._mlp(x, layer)
        final, _ = self._norm(hidden, residual, "norm")
        reward = self._score(final, shared)
        self.nodes.append(helper.make_node("Identity", [reward], ["reward"]))
        output = helper.make_tensor_value_info("reward", TensorProto.FLOAT, ["batch"])
        graph = helper.make_graph(
            self.nodes, f"reward_{self.flavor}", inputs, [output], [*self.weights.values(), *self.constants]
        )
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="rewardserve")

    def _row_inputs(self, length: str) -> dict[str, str]:
        """Per-batch tensors the attention of every layer reads; `length` is the padded one."""
        if self.flavor == "fused":
            lengths = self.one("ReduceSum", "attention_mask", self.ints("axis_1", [1]), keepdims=0)
            return {
                # GroupQueryAttention: each row's last real position, and the padded length
                "seqlens_k": self.one("Cast", self.one("Sub", lengths, "one_i64"), to=TensorProto.INT32),
                "total_length": self.one("Cast", length, to=TensorProto.INT32),
            }
        positions = self.positions
        # Key j is visible from query i when j <= i and j is a real token: an additive bias.
        causal = self.one(
            "LessOrEqual",
            self.one("Unsqueeze", positions, "axis_0"),
            self.one("Unsqueeze", positions, self.ints("axis_1", [1])),
        )
        real = self.one(
            "Cast",
            self.one("Unsqueeze", "attention_mask", self.ints("axes_1_2", [1, 2])),
            to=TensorProto.BOOL,
        )
        visible = self.one("And", self.one("Unsqueeze", causal, "axis_0"), real)
        floor = self.const("masked", np.array(np.finfo(np.float32).min, np.float32))
        bias = self.one("Where", visible, self.const("visible", np.array(0.0, np.float32)), floor)
        cos = self.one("Gather", "cos_cache", positions)
        sin = self.one("Gather", "sin_cache", positions)
        return {
            "bias": bias,  # (batch, 1, sequence, sequence)
            "cos": self.one("Concat", cos, cos, axis=-1),  # (sequence, head_dim): rotate-half layout
            "sin": self.one("Concat", sin, sin, axis=-1),
        }

    def _norm(self, x: str, residual: str | None, weight: str) -> tuple[str, str]:
        """RMSNorm of x (+ residual, fused when there is one); returns (normed, new residual)."""
        if residual is None:
            return self.one("SimplifiedLayerNormalization", x, weight, axis=-1, epsilon=self.eps, stash_type=1), x
        normed, _, _, total = self.op(
            "SkipSimplifiedLayerNormalization", [x, residual, weight], 4, MS, epsilon=self.eps
        )
        return normed, total

    def _project(self, x: str, tensors: list[TensorProto]) -> str:
        y = self.one("MatMul", x, tensors[0].name)
        return self.one("Add", y, tensors[1].name) if len(tensors) > 1 else y

    def _heads_norm(self, x: str, heads: int, tensors: list[TensorProto] | None) -> str:
        """Qwen3's RMSNorm over each head of (batch, sequence, heads * head_dim)."""
        if not tensors:
            return x
        per_head = self.one("Reshape", x, self.ints(f"shape_heads_{heads}", [0, 0, heads, self.head_dim]))
        normed = self.one(
            "SimplifiedLayerNormalization", per_head, tensors[0].name, axis=-1, epsilon=self.eps, stash_type=1
        )
        return self.one("Reshape", normed, self.ints("shape_flat", [0, 0, -1]))

    def _attention(self, x: str, layer: dict[str, list[TensorProto]]) -> str:
        q = self._heads_norm(self._project(x, layer["q_proj"]), self.heads, layer.get("q_norm"))
        k = self._heads_norm(self._project(x, layer["k_proj"]), self.kv_heads, layer.get("k_norm"))
        v = self._project(x, layer["v_proj"])
        scale = self.head_dim**-0.5
        if self.flavor == "fused":
            context = self.op(
                "GroupQueryAttention",
                [q, k, v, "", "", self.rows["seqlens_k"], self.rows["total_length"], "cos_cache", "sin_cache"],
                3,
                MS,
                num_heads=self.heads,
                kv_num_heads=self.kv_heads,
                do_rotary=1,
                rotary_interleaved=0,
                scale=scale,
            )[0]
        else:
            context = self._plain_attention(q, k, v, scale)
        return self._project(context, layer["o_proj"])

    def _plain_attention(self, q: str, k: str, v: str, scale: float) -> str:
        """Attention in standard operators, laid out as transformers' eager attention is."""
        q = self._rotate(self._split_heads(q, self.heads))
        k = self._repeat_kv(self._rotate(self._split_heads(k, self.kv_heads)))
        v = self._repeat_kv(self._split_heads(v, self.kv_heads))
        scores = self.one("MatMul", q, self.one("Transpose", k, perm=[0, 1, 3, 2]))
        scores = self.one(
            "Add",
            self.one("Mul", scores, self.const("attention_scale", np.array(scale, np.float32))),
            self.rows["bias"],
        )
        context = self.one("MatMul", self.one("Softmax", scores, axis=-1), v)
        return self.one(
            "Reshape", self.one("Transpose", context, perm=[0, 2, 1, 3]), self.ints("shape_flat", [0, 0, -1])
        )

    def _split_heads(self, x: str, heads: int) -> str:
        shape = self.ints(f"shape_heads_{heads}", [0, 0, heads, self.head_dim])
        return self.one("Transpose", self.one("Reshape", x, shape), perm=[0, 2, 1, 3])

    def _rotate(self, x: str) -> str:
        """Rotary embedding, rotate-half layout: x * cos + rotate_half(x) * sin."""
        first, second = self.op("Split", [x], 2, axis=-1, num_outputs=2)
        rotated = self.one("Concat", self.one("Neg", second), first, axis=-1)
        return self.one("Add", self.one("Mul", x, self.rows["cos"]), self.one("Mul", rotated, self.rows["sin"]))

    def _repeat_kv(self, x: str) -> str:
        """(batch, kv_heads, sequence, head_dim) -> (batch, heads, ...): each kv head serves a group."""
        groups = self.heads // self.kv_heads
        if groups == 1:
            return x
        shape = self.one("Shape", x)
        grouped = self.one(
            "Concat",
            self.one("Slice", shape, self.ints("at_0", [0]), self.ints("at_2", [2])),
            self.ints(f"groups_{groups}", [groups]),
            self.one("Slice", shape, "at_2", self.ints("at_4", [4])),
            axis=0,
        )
        expanded = self.one("Expand", self.one("Unsqueeze", x, "at_2"), grouped)
        return self.one("Reshape", expanded, self.ints("shape_all_heads", [0, self.heads, -1, self.head_dim]))

    def _mlp(self, x: str, layer: dict[str, list[TensorProto]]) -> str:
        gate = self._project(x, layer["gate_proj"])
        activated = self.one("Mul", gate, self.one("Sigmoid", gate))  # SiLU
        return self._project(self.one("Mul", activated, self._project(x, layer["up_proj"])), layer["down_proj"])

    def _score(self, final: str, shared: dict[str, list[TensorProto]]) -> str:
        """The score head at each row's last real token (not the pad id in the chat layout)."""
        readable = "attention_mask"
        if self.fmt.layout == "chat" and self.config.pad_token_id is not None:
            is_pad = self.one("Equal", "input_ids", self.ints("pad_id", self.config.pad_token_id))
            readable = self.one("Mul", readable, self.one("Cast", self.one("Not", is_pad), to=TensorProto.INT64))
        last = self.one("ArgMax", self.one("Mul", readable, self.positions), axis=1, keepdims=1)
        pooled = self.one("GatherND", final, last, batch_dims=1)
        logits = self._project(pooled, shared["score"])
        return self.one(
            "Squeeze", self.one("Gather", logits, self.ints("label_0", [0]), axis=1), self.ints("axis_1", [1])
        )


def _count(model: onnx.ModelProto) -> dict[str, int]:
    """Fused operators by type, as GraphInfo records them."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain == MS or node.op_type.startswith("Simplified"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
