"""The ONNX graph of a decoder reward model, node by node, from its weights (decoder_weights.py):
fused (onnxruntime's GroupQueryAttention, SkipSimplifiedLayerNormalization, rotary) or portable
(standard operators, for OpenVINO), whole or with a prefix (decoder_graph.py says when each)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rewardserve.bundle import InputFormat
from rewardserve.bundle.outputs import OBJECTIVES, REWARD, STEP_REWARDS, VERDICT, ModelOutputs
from rewardserve.export.decoder_config import GEMMA, activation, head_dim, rope_parameters

OPSET = 18
MS = "com.microsoft"
Flavor = Literal["fused", "portable"]
# A graph may also be written with a prefix: `prefix` reads each layer's keys and values of
# tokens before the chunk it scores (past.{i}.key/value, GroupQueryAttention's past inputs, each
# row's `prefix_lengths` real ones) and answers them with the chunk's appended (present.{i}.*).
# Run on a prompt with an empty past it answers the prompt's keys and values; run on responses
# with those as their past it answers their rewards, so a prompt shared by several responses runs
# once. One graph for both: a second session on the same weights would hold them twice.
Part = Literal["whole", "prefix"]


class GraphWriter:
    """The nodes of one graph flavor. Names follow the data: each step's output names the next
    step's input."""

    def __init__(self, config, fmt: InputFormat, flavor: Flavor, outputs: ModelOutputs, part: Part = "whole") -> None:
        self.config, self.fmt, self.flavor, self.outputs, self.part = config, fmt, flavor, outputs, part
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = head_dim(config)
        self.eps = float(config.rms_norm_eps)
        self.gemma = config.model_type in GEMMA
        self.scale = (config.query_pre_attn_scalar if self.gemma else self.head_dim) ** -0.5
        self.softcap = float(getattr(config, "attn_logit_softcapping", None) or 0.0)
        self.rope_kinds = list(rope_parameters(config))
        self.layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        self.window = config.sliding_window if self.gemma else None
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
        names = self.fmt.input_names if self.part == "whole" else ["input_ids", "attention_mask"]
        inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names]
        if self.part == "prefix":  # each row's prefix length, and its keys and values per layer (padded)
            inputs.append(helper.make_tensor_value_info("prefix_lengths", TensorProto.INT64, ["batch"]))
            inputs += [
                helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", self.kv_heads, "past", self.head_dim])
                for name in self._cache_names("past", len(layers))
            ]
        hidden = self.one("Gather", "embed_tokens", "input_ids")
        if self.gemma:  # embeddings scaled by sqrt(hidden size), in fp32 as Gemma does
            scale = np.array(self.config.hidden_size**0.5, np.float32)
            hidden = self.one("Mul", hidden, self.const("embed_scale", scale))
        length = self.one("Squeeze", self.one("Shape", "input_ids", start=1, end=2), self.ints("axis_0", [0]))
        self.positions = self.one("Range", self.ints("zero_i64", 0), length, self.ints("one_i64", 1))
        self.rows = self._row_inputs(length)
        residual = None
        for index, layer in enumerate(layers):
            name = f"layers.{index}"
            x, residual = self._norm(hidden, residual, f"{name}.input_norm")
            attention = self._attention(x, layer, self.layer_types[index], index)
            if self.gemma:  # normed after attention and around the MLP, before each residual add
                attention = self._norm(attention, None, f"{name}.post_attention_norm")[0]
                x, residual = self._norm(attention, residual, f"{name}.pre_feedforward_norm")
                hidden = self._norm(self._mlp(x, layer), None, f"{name}.post_feedforward_norm")[0]
            else:
                x, residual = self._norm(attention, residual, f"{name}.post_attention_norm")
                hidden = self._mlp(x, layer)
        final, _ = self._norm(hidden, residual, "norm")
        heads = self._steps(final, shared) if self.outputs.steps else self._score(final, shared)
        if self.part == "prefix":
            shape = ["batch", self.kv_heads, "total", self.head_dim]
            heads |= {name: (name, shape) for name in self._cache_names("present", len(layers))}
        graph_outputs = []
        for name, (value, shape) in heads.items():
            if value != name:
                self.nodes.append(helper.make_node("Identity", [value], [name]))
            graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        title = f"reward_{self.flavor}" + ("" if self.part == "whole" else f"_{self.part}")
        graph = helper.make_graph(self.nodes, title, inputs, graph_outputs, [*self.weights.values(), *self.constants])
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="rewardserve")

    @staticmethod
    def _cache_names(kind: str, layers: int) -> list[str]:
        return [f"{kind}.{i}.{part}" for i in range(layers) for part in ("key", "value")]

    def _row_inputs(self, length: str) -> dict[str, str]:
        """Per-batch tensors the attention of every layer reads; `length` is the padded one."""
        if self.flavor == "fused":
            return self._fused_row_inputs(length)
        if self.part == "prefix":
            keys, queries, real = self._prefix_positions()
            positions = self.one("Squeeze", queries, self.ints("axis_2", [2]))  # (batch, sequence)
        else:
            positions = self.positions
            keys, queries = (
                self.one("Unsqueeze", positions, "axis_0"),
                self.one("Unsqueeze", positions, self.ints("axis_1", [1])),
            )
            real = self.one(
                "Cast",
                self.one("Unsqueeze", "attention_mask", self.ints("axes_1_2", [1, 2])),
                to=TensorProto.BOOL,
            )
        return self._biases(keys, queries, real) | self._rotary_tables(positions)

    def _fused_row_inputs(self, length: str) -> dict[str, str]:
        """GroupQueryAttention's: each row's last real position, and the padded length."""
        lengths = self.one("ReduceSum", "attention_mask", self.ints("axis_1", [1]), keepdims=0)
        if self.part == "prefix":
            # After the prompt's cached keys: each row's last real position counts its prompt,
            # and its response tokens are a right-padded chunk of `lengths` valid rows.
            last = self.one("Sub", self.one("Add", lengths, "prefix_lengths"), "one_i64")
            past = self.one("Squeeze", self.one("Shape", "past.0.key", start=2, end=3), "axis_0")
            return {
                "seqlens_k": self.one("Cast", last, to=TensorProto.INT32),
                "total_length": self.one("Cast", self.one("Add", past, length), to=TensorProto.INT32),
                "query_seqlens": self.one("Cast", lengths, to=TensorProto.INT32),
            }
        return {
            "seqlens_k": self.one("Cast", self.one("Sub", lengths, "one_i64"), to=TensorProto.INT32),
            "total_length": self.one("Cast", length, to=TensorProto.INT32),
        }

    def _biases(self, keys: str, queries: str, real: str) -> dict[str, str]:
        """Key j is visible from query i when j <= i (and i - j < window in sliding layers) and j
        is a real token: an additive bias per kind of layer."""
        causal = self.one("LessOrEqual", keys, queries)
        floor = self.const("masked", np.array(np.finfo(np.float32).min, np.float32))
        rows = {}
        for kind in set(self.layer_types):
            allowed = causal
            if kind == "sliding_attention" and self.window:
                near = self.one("Less", self.one("Sub", queries, keys), self.ints("window", self.window))
                allowed = self.one("And", causal, near)
            if self.part == "whole":
                allowed = self.one("Unsqueeze", allowed, "axis_0")
            visible = self.one("And", allowed, real)
            # (batch, 1, sequence, keys): keys are the sequence, after the past in a prefix graph
            visible = self.one("Unsqueeze", visible, "axis_1") if self.part == "prefix" else visible
            bias = self.one("Where", visible, self.const("visible", np.array(0.0, np.float32)), floor)
            # The query heads of a group are folded into the query axis (_plain_attention): the bias
            # repeats once per head of a group, along that axis.
            groups = self.heads // self.kv_heads
            rows[f"bias_{kind}"] = bias if groups == 1 else self.one("Concat", *[bias] * groups, axis=2)
        return rows

    def _rotary_tables(self, positions: str) -> dict[str, str]:
        """Each rotary kind's cos and sin at the tokens' positions."""
        rows = {}
        for kind in self.rope_kinds:
            cos = self.one("Gather", f"cos_cache_{kind}", positions)
            sin = self.one("Gather", f"sin_cache_{kind}", positions)
            # (sequence, head_dim), the rotate-half layout; (batch, 1, sequence, head_dim) after a past
            cos, sin = self.one("Concat", cos, cos, axis=-1), self.one("Concat", sin, sin, axis=-1)
            if self.part == "prefix":
                cos, sin = self.one("Unsqueeze", cos, "axis_1"), self.one("Unsqueeze", sin, "axis_1")
            rows[f"cos_{kind}"], rows[f"sin_{kind}"] = cos, sin
        return rows

    def _prefix_positions(self) -> tuple[str, str, str]:
        """A portable prefix graph's keys are each row's past (right-padded: its first
        `prefix_lengths` are real) followed by its chunk. Returns the keys' positions in the whole
        sequence (batch, 1, keys), the queries' (batch, sequence, 1), and which keys are real
        tokens (batch, 1, keys)."""
        past = self.one("Squeeze", self.one("Shape", "past.0.key", start=2, end=3), "axis_0")
        past_positions = self.one("Range", "zero_i64", past, "one_i64")
        prefix = self.one("Unsqueeze", "prefix_lengths", "axis_1")  # (batch, 1)
        queries = self.one("Add", prefix, self.one("Unsqueeze", self.positions, "axis_0"))  # (batch, sequence)
        # (batch, past): the past's own positions, one row per batch row
        every_row = self.one("Mul", prefix, "zero_i64")
        past_rows = self.one("Add", every_row, self.one("Unsqueeze", past_positions, "axis_0"))
        keys = self.one("Concat", past_rows, queries, axis=1)
        real = self.one(
            "Concat",
            self.one("Less", past_rows, prefix),
            self.one("Cast", "attention_mask", to=TensorProto.BOOL),
            axis=1,
        )
        unsqueeze = self.ints("axis_1", [1])
        return (
            self.one("Unsqueeze", keys, unsqueeze),
            self.one("Unsqueeze", queries, self.ints("axis_2", [2])),
            self.one("Unsqueeze", real, unsqueeze),
        )

    def _rope_kind(self, layer_type: str) -> str:
        """Which rotary tables a layer reads: its own kind's where the model has several."""
        return layer_type if layer_type in self.rope_kinds else self.rope_kinds[0]

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

    def _attention(self, x: str, layer: dict[str, list[TensorProto]], layer_type: str, index: int) -> str:
        q = self._heads_norm(self._project(x, layer["q_proj"]), self.heads, layer.get("q_norm"))
        k = self._heads_norm(self._project(x, layer["k_proj"]), self.kv_heads, layer.get("k_norm"))
        v = self._project(x, layer["v_proj"])
        rope = self._rope_kind(layer_type)
        sliding = layer_type == "sliding_attention" and self.window
        if self.flavor == "fused":
            optional = {"softcap": self.softcap} if self.softcap else {}
            if sliding:  # transformers' window: the query and the window - 1 keys before it
                optional["local_window_size"] = self.window
            past = [f"past.{index}.key", f"past.{index}.value"] if self.part == "prefix" else ["", ""]
            inputs = [q, k, v, *past, self.rows["seqlens_k"], self.rows["total_length"]]
            inputs += [f"cos_cache_{rope}", f"sin_cache_{rope}"]
            if self.part == "prefix":  # inputs 9-15 unused; 16: the valid rows of each chunk
                inputs += [""] * 7 + [self.rows["query_seqlens"]]
            context, present_key, present_value = self.op(
                "GroupQueryAttention",
                inputs,
                3,
                MS,
                num_heads=self.heads,
                kv_num_heads=self.kv_heads,
                do_rotary=1,
                rotary_interleaved=0,
                scale=self.scale,
                **optional,
            )
            if self.part == "prefix":
                for value, name in ((present_key, f"present.{index}.key"), (present_value, f"present.{index}.value")):
                    self.nodes.append(helper.make_node("Identity", [value], [name]))
        else:
            context = self._plain_attention(q, k, v, rope, layer_type, index)
        return self._project(context, layer["o_proj"])

    def _plain_attention(self, q: str, k: str, v: str, rope: str, layer_type: str, index: int) -> str:
        """Attention in standard operators; in a prefix graph the keys and values are the past's
        followed by the sequence's own. Grouped-query heads are not repeated for each query head
        (transformers' repeat_kv, an OpenVINO Broadcast of fp32 keys and values in every layer):
        the query heads a key-value head serves are consecutive, so (batch, heads, sequence, d)
        reshapes to (batch, kv_heads, groups x sequence, d) and every product runs per key-value
        head. Each score is the same dot product either way: the 0.6B Qwen3's rewards under
        OpenVINO at bf16 were bit-identical to the repeated graph's, a response after a 300-token
        prompt ran 1.10-1.12x faster and whole sequences 1.04-1.07x (one-off runs, side by side)."""
        q = self._rotate(self._split_heads(q, self.heads), rope)
        k = self._rotate(self._split_heads(k, self.kv_heads), rope)
        v = self._split_heads(v, self.kv_heads)
        if self.part == "prefix":
            k = self.one("Concat", f"past.{index}.key", k, axis=2)
            v = self.one("Concat", f"past.{index}.value", v, axis=2)
            self.nodes.append(helper.make_node("Identity", [k], [f"present.{index}.key"]))
            self.nodes.append(helper.make_node("Identity", [v], [f"present.{index}.value"]))
        grouped = self.heads != self.kv_heads
        if grouped:
            q = self.one("Reshape", q, self.ints("shape_grouped", [0, self.kv_heads, -1, self.head_dim]))
        scores = self.one("MatMul", q, self.one("Transpose", k, perm=[0, 1, 3, 2]))
        scores = self.one("Mul", scores, self.const("attention_scale", np.array(self.scale, np.float32)))
        if self.softcap:  # Gemma 2: cap * tanh(scores / cap)
            cap = self.const("softcap", np.array(self.softcap, np.float32))
            scores = self.one("Mul", self.one("Tanh", self.one("Div", scores, cap)), cap)
        scores = self.one("Add", scores, self.rows[f"bias_{layer_type}"])
        context = self.one("MatMul", self.one("Softmax", scores, axis=-1), v)
        if grouped:
            context = self.one("Reshape", context, self.ints("shape_all_heads", [0, self.heads, -1, self.head_dim]))
        return self.one(
            "Reshape", self.one("Transpose", context, perm=[0, 2, 1, 3]), self.ints("shape_flat", [0, 0, -1])
        )

    def _split_heads(self, x: str, heads: int) -> str:
        shape = self.ints(f"shape_heads_{heads}", [0, 0, heads, self.head_dim])
        return self.one("Transpose", self.one("Reshape", x, shape), perm=[0, 2, 1, 3])

    def _rotate(self, x: str, rope: str) -> str:
        """Rotary embedding, rotate-half layout: x * cos + rotate_half(x) * sin."""
        first, second = self.op("Split", [x], 2, axis=-1, num_outputs=2)
        rotated = self.one("Concat", self.one("Neg", second), first, axis=-1)
        cos, sin = self.rows[f"cos_{rope}"], self.rows[f"sin_{rope}"]
        return self.one("Add", self.one("Mul", x, cos), self.one("Mul", rotated, sin))

    def _mlp(self, x: str, layer: dict[str, list[TensorProto]]) -> str:
        gate = self._project(x, layer["gate_proj"])
        if activation(self.config) == "gelu_pytorch_tanh":
            activated = self._tanh_gelu(gate)
        else:
            activated = self.one("Mul", gate, self.one("Sigmoid", gate))  # SiLU
        return self._project(self.one("Mul", activated, self._project(x, layer["up_proj"])), layer["down_proj"])

    def _tanh_gelu(self, x: str) -> str:
        """GELU, tanh approximation: onnxruntime's FastGelu, or its formula in standard operators,
        0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
        if self.flavor == "fused":
            return self.one("FastGelu", x, domain=MS)
        cube = self.one("Mul", self.one("Mul", x, x), x)
        inner = self.one("Add", x, self.one("Mul", cube, self.const("gelu_cubic", np.array(0.044715, np.float32))))
        inner = self.one("Mul", inner, self.const("gelu_scale", np.array(np.sqrt(2 / np.pi), np.float32)))
        half = self.const("half", np.array(0.5, np.float32))
        one = self.const("one_f32", np.array(1.0, np.float32))
        return self.one("Mul", self.one("Mul", x, half), self.one("Add", one, self.one("Tanh", inner)))

    def _score(self, final: str, shared: dict[str, list[TensorProto]]) -> dict[str, tuple[str, list]]:
        """The score head at each row's last real token (not the pad id in the chat layout): the
        reward; with N objectives, those and the reward their rule makes (a weight each)."""
        readable = "attention_mask"
        if self.fmt.layout == "chat" and self.config.pad_token_id is not None:
            is_pad = self.one("Equal", "input_ids", self.ints("pad_id", self.config.pad_token_id))
            readable = self.one("Mul", readable, self.one("Cast", self.one("Not", is_pad), to=TensorProto.INT64))
        last = self.one("ArgMax", self.one("Mul", readable, self.positions), axis=1, keepdims=1)
        pooled = self.one("GatherND", final, last, batch_dims=1)
        logits = self._project(pooled, shared["score"])
        if self.outputs.verdict is not None:  # a judge's head is the LM head's rows for its verdict tokens
            return {VERDICT: (self._soft_capped(logits), ["batch", len(self.outputs.verdict.token_ids)])}
        objectives = self.outputs.objectives
        if objectives is None:
            reward = self.one("Gather", logits, self.ints("label_0", [0]), axis=1)
            return {REWARD: (self.one("Squeeze", reward, self.ints("axis_1", [1])), ["batch"])}
        weights = np.array(objectives.weight_vector(), np.float32)
        reward = self.one("MatMul", logits, self.const("objective_weights", weights))
        return {REWARD: (reward, ["batch"]), OBJECTIVES: (logits, ["batch", len(weights)])}

    def _soft_capped(self, logits: str) -> str:
        """A language model's logits as it caps them (Gemma 2: cap * tanh(logits / cap))."""
        cap = getattr(self.config, "final_logit_softcapping", None)
        if not cap:
            return logits
        cap = self.const("final_logit_softcap", np.array(cap, np.float32))
        return self.one("Mul", self.one("Tanh", self.one("Div", logits, cap)), cap)

    def _steps(self, final: str, shared: dict[str, list[TensorProto]]) -> dict[str, tuple[str, list]]:
        """A token classifier's step class probability at every position (a causal LM's step
        tokens' logits capped as the model caps its logits)."""
        steps = self.outputs.steps
        logits = self._project(final, shared["score"])
        if steps.class_token_ids is not None:
            logits = self._soft_capped(logits)
        label = self.ints("step_label", [steps.label])
        if steps.activation == "softmax":
            probabilities = self.one("Gather", self.one("Softmax", logits, axis=-1), label, axis=2)
        else:
            probabilities = self.one("Sigmoid", self.one("Gather", logits, label, axis=2))
        return {STEP_REWARDS: (self.one("Squeeze", probabilities, self.ints("axis_2", [2])), ["batch", "sequence"])}


def count_fused(model: onnx.ModelProto) -> dict[str, int]:
    """Fused operators by type, as GraphInfo records them."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain == MS or node.op_type.startswith("Simplified"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
