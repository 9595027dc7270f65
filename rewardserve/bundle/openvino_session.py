"""bf16 on CPUs with matrix engines: an fp32 ONNX graph compiled by OpenVINO's CPU plugin, its
backbone at bf16 and its reward head at fp32.

OpenVINO at bf16 inference precision runs every floating-point node in bf16 (fp32 accumulation
inside the matrix products) and rounds each node's output to bf16, the graph's outputs included.
A reward read out of such a graph is a bf16 number: 8 significant bits, so rewards in [2, 4) step
by 0.0156, different sequences collapse onto the same value, and a sequence's reward moves by a
whole step when its batch-mates change a kernel's shape (measured on the default bundle: 1.56e-2
alone against in a batch of 40). So the graph is cut where the backbone hands its per-token
hidden states to the head: the backbone runs at bf16, where the time is, and the head (pooling,
the projection, an objectives rule) runs at fp32 on the backbone's states, in a second compiled
model that costs a few microseconds. OpenVINO's Python API has no way to keep single nodes at
fp32 inside one bf16 model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewardserve.bundle.past import PAST, PRESENT

# Kernels prepared per input shape are cached, 5000 by default: 3,000 random (batch, length)
# shapes of the default model grew the process to 2.1 GB; 100 kept it at 640 MB at the same speed
# (a cache of 0 ran 25% slower).
SHAPE_CACHE = 100


# A prefix graph's keys and values cross the session's boundary as bf16 when it runs at bf16:
# numpy has no bf16, so they travel as the raw bits in uint16 arrays (bundle/prefix.py keeps them
# so). A kept prompt holds half the bytes, and every call copies half. The values come out of bf16
# products already; the keys (rotated at fp32) are rounded, and rewards after them stay as close
# to the whole sequence's as after fp32 ones (benchmarks/bf16_keys_values.py; export's bf16
# prefix gate judges this path as served).
BF16_BITS = np.dtype(np.uint16)


# Nodes that compute nothing: OpenVINO writes a GatherND over broadcast states, for example.
MOVES_DATA = ("Broadcast", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Convert", "Tile", "Concat")


def find_head(results) -> tuple[set[str], list]:
    """The nodes of the head that answers `results` (an openvino.Model's), by name, and the outputs where it
    begins: the per-token hidden states (float, rank 3) that the head's projection reads, directly
    (a token classifier) or through a pooling (a sequence classifier). Walking back from the
    results, the head is every node up to the first weight projection and on, through rank-2
    nodes and nodes that only move data, to the per-token states the backbone computed."""
    cut: dict[tuple[str, int], object] = {}
    seen: set[str] = set()
    stack = [(result, False) for result in results]
    while stack:
        node, projected = stack.pop()
        if node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        projected = projected or _is_projection(node)
        for port in node.inputs():
            source = port.get_source_output()
            producer = source.get_node()
            if producer.get_type_name() in ("Constant", "Parameter"):
                continue
            if projected and _token_states(source) and producer.get_type_name() not in MOVES_DATA:
                cut[(producer.get_friendly_name(), source.get_index())] = source
            else:
                stack.append((producer, projected))
    return seen, list(cut.values())


def _is_projection(node) -> bool:
    """A matrix product by a weight (a constant, possibly behind a Convert)."""
    if node.get_type_name() != "MatMul":
        return False
    weight = node.input(1).get_source_output().get_node()
    while weight.get_type_name() == "Convert":
        weight = weight.input(0).get_source_output().get_node()
    return weight.get_type_name() == "Constant"


def _token_states(output) -> bool:
    return output.get_element_type().is_real() and output.get_partial_shape().rank.get_length() == 3


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: list[int | None]


class OpenVinoSession:
    """An fp32 ONNX graph run by OpenVINO's CPU plugin: its backbone at `inference_precision`
    (bf16: matrix products on AMX or AVX-512-BF16), its head at fp32 (the module's docstring says
    why). It answers `run` as an ONNX Runtime session does, so GraphRunner treats both alike.
    OpenVINO releases the GIL while it infers, as onnxruntime does. `inference_precision="f32"`
    compiles the backbone at fp32 too, which benchmarks compare against; `perf_count` has OpenVINO
    time every node (its requests' `profiling_info`)."""

    # Inputs and outputs shared with OpenVINO, not copied: a prefix graph's keys and values in and
    # out hold hundreds of MB a call (a 0.6B Qwen3's 300-token prompt: 69 MB per row), and only
    # the outputs asked for are copied out (`run`). benchmarks/openvino_copies.py turns it off.
    SHARE = True
    # A prefix graph's keys and values in and out as bf16 (BF16_BITS) when the backbone runs at
    # bf16; benchmarks/bf16_keys_values.py turns it off to compare with fp32 ones.
    BF16_KEYS_AND_VALUES = True
    # A group's responses read one copy of their prompt's keys and values, broadcast to their rows
    # inside the graph (`_past_broadcast`); benchmarks/group_past.py turns it off to compare.
    BROADCAST_PAST = True

    def __init__(self, graph: Path, threads: int, inference_precision: str = "bf16", perf_count: bool = False) -> None:
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": inference_precision,
            # One stream with every thread: the batcher runs one batch at a time.
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE,
            "PERF_COUNT": perf_count,  # per-node timings, for benchmarks/bf16_engine.py's profile
        }
        model = core.read_model(str(graph))
        self._inputs = [
            GraphInput(p.get_any_name(), [d.get_length() if d.is_static else None for d in p.get_partial_shape()])
            for p in model.inputs
        ]
        past = any(p.get_friendly_name().startswith(PAST) for p in model.get_parameters())
        # Whether `run` takes one row of past keys and values for every row of a call (a batch of 1)
        self.broadcasts_past = past and self.BROADCAST_PAST and _past_broadcast(ov, model)
        bf16 = past and inference_precision == "bf16" and self.BF16_KEYS_AND_VALUES
        self.past_dtype = BF16_BITS if bf16 else np.dtype(np.float32)
        if self.past_dtype == BF16_BITS:
            model = _keys_and_values_at_bf16(ov, model)
        backbone, head = _split(ov, model)
        compiled = core.compile_model(backbone, "CPU", config)
        # On a CPU without bf16 instructions OpenVINO quietly runs fp32; say so instead.
        executes = compiled.get_property("INFERENCE_PRECISION_HINT")
        if executes != getattr(ov.Type, inference_precision):
            raise RuntimeError(f"OpenVINO compiled {graph.name} to run at {executes}, not {inference_precision}")
        self._backbone = compiled.create_infer_request()
        self._backbone_inputs = [port.get_any_name() for port in compiled.inputs]
        compiled_head = core.compile_model(head, "CPU", config | {"INFERENCE_PRECISION_HINT": "f32"})
        self._head = compiled_head.create_infer_request()
        self._head_inputs = [port.get_any_name() for port in compiled_head.inputs]
        self._head_outputs = {name for port in compiled_head.outputs for name in port.get_names()}

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        share = {"share_inputs": self.SHARE, "share_outputs": self.SHARE}
        inputs = {name: self._tensor(feeds[name]) for name in self._backbone_inputs}
        # Every name of each output: OpenVINO may keep another of a tensor's names as its "any" name.
        answers = _by_name(self._backbone.infer(inputs, **share))
        if any(name in self._head_outputs for name in output_names):  # not for a prompt's keys and values alone
            # The head's own inputs are named after the backbone's states they stand for.
            head_feeds = answers | feeds
            answers |= _by_name(self._head.infer({name: head_feeds[name] for name in self._head_inputs}, **share))
        # Copies: the requests reuse their output buffers on the next call.
        return [self._copied(name, answers[name]) for name in output_names]

    def _tensor(self, array: np.ndarray):
        """A feed as OpenVINO reads it: bf16 bits (uint16) as a bf16 tensor over the same memory."""
        if array.dtype != BF16_BITS:
            return array
        import openvino as ov

        return ov.Tensor(np.ascontiguousarray(array), list(array.shape), ov.Type.bf16)

    def _copied(self, name: str, value: np.ndarray) -> np.ndarray:
        """An output, copied; OpenVINO hands a bf16 one back as float16 numbers of its bits."""
        copy = np.array(value)
        return copy.view(BF16_BITS) if name.startswith(PRESENT) and self.past_dtype == BF16_BITS else copy

    def get_inputs(self) -> list[GraphInput]:
        """The graph's inputs as onnxruntime describes them: a name, and a shape of sizes (None
        where dynamic)."""
        return self._inputs

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU"]


def _by_name(results) -> dict[str, np.ndarray]:
    return {name: value for port, value in results.items() for name in port.get_names()}


def _past_broadcast(ov, model) -> bool:
    """Rewrite `model` (a portable prefix graph: each layer's `past` concatenated before its
    chunk's keys or values, the concatenation answered as `present`) so that a past of one row
    serves every row of a call, and `present` is the chunk's own keys and values. True where every
    past input has that pattern; otherwise False and `model` is left as it was.

    Responses to one prompt then cross into the engine with one copy of its keys and values, not
    one per row (a 1,000-token prompt of the 0.6B Qwen3 at bf16: 112 MiB a row), and the
    engine's per-layer concatenation is the only copy, freed layer by layer, where every row's
    `present` used to hold the prompt's keys and values of all layers at once. The numbers are
    the same: each row's keys are the same values, concatenated as before. A call with an empty
    past (a whole sequence, a prompt) answers the same `present` as before: its chunk is all of it.

    On the 0.6B shape at w8a8 a group's call ran 1.06-1.70x faster, and whole sequences and prompts
    about 10% slower: the broadcast's price (a Gather of the one row cost them nothing but ran
    groups 14-19% slower; docs/performance.md, "One copy of a prompt a call")."""
    rewrites = []
    for parameter in model.get_parameters():
        if not parameter.get_friendly_name().startswith(PAST):
            continue
        concats = [t for t in parameter.output(0).get_target_inputs() if t.get_node().get_type_name() == "Concat"]
        if len(concats) != 1 or concats[0].get_index() != 0 or concats[0].get_node().get_attributes()["axis"] != 2:
            return False
        concat = concats[0].get_node()
        presents = [
            t
            for t in concat.output(0).get_target_inputs()
            if any(name.startswith(PRESENT) for name in t.get_node().output(0).get_names())
        ]
        if len(presents) != 1:
            return False
        rewrites.append((parameter, concat, presents[0]))
    ids = next(p for p in model.get_parameters() if p.get_friendly_name() == "input_ids")
    rows = ov.opset13.gather(ov.opset13.shape_of(ids), np.array([0]), np.array(0))
    # (rows, 1, 1, 1): "bidirectional" keeps a past that already has a row per row as it is
    target = ov.opset13.concat([rows, ov.opset13.constant(np.ones(3, np.int64))], 0)
    for parameter, concat, present in rewrites:
        every_row = ov.opset13.broadcast(parameter, target, broadcast_spec="BIDIRECTIONAL")
        concat.input(0).replace_source_output(every_row.output(0))
        present.replace_source_output(concat.input_value(1))
    model.validate_nodes_and_infer_types()
    return True


def _keys_and_values_at_bf16(ov, model):
    """`model` with its past inputs and present outputs typed bf16 at the boundary."""
    steps = ov.preprocess.PrePostProcessor(model)
    for parameter in model.get_parameters():
        if parameter.get_friendly_name().startswith(PAST):
            steps.input(parameter.get_friendly_name()).tensor().set_element_type(ov.Type.bf16)
    for index, output in enumerate(model.outputs):
        if any(name.startswith(PRESENT) for name in output.get_names()):
            steps.output(index).tensor().set_element_type(ov.Type.bf16)
    return steps.build()


def _split(ov, model):
    """(backbone, head): the backbone answers the states where `find_head` says the head begins; the head reads them
    (as parameters of the same names) and the graph inputs it needs besides, and answers the
    graph's outputs."""
    # A prefix graph's keys and values are the backbone's (bundle/prefix.py)
    kept = [r for r in model.get_results() if any(n.startswith(PRESENT) for n in r.input_value(0).get_names())]
    scored = [r for r in model.get_results() if r not in kept]
    head_nodes, cut = find_head(scored)
    if not cut:
        raise ValueError("no reward head found: no weight projection reads the per-token hidden states")
    names = [f"head_input_{i}" for i in range(len(cut))]
    for output, name in zip(cut, names, strict=True):
        output.get_tensor().set_names({name})
    states = [ov.opset13.result(output) for output in cut]
    backbone = ov.Model([*states, *kept], model.get_parameters(), "backbone")
    stand_ins = []
    for output, name in zip(cut, names, strict=True):
        stand_in = ov.opset13.parameter(output.get_partial_shape(), output.get_element_type(), name=name)
        stand_in.output(0).get_tensor().set_names({name})
        for consumer in list(output.get_target_inputs()):
            if consumer.get_node().get_friendly_name() in head_nodes:
                consumer.replace_source_output(stand_in.output(0))
        stand_ins.append(stand_in)
    reached = _parameters_reached(scored)
    graph_inputs = [p for p in model.get_parameters() if p.get_friendly_name() in reached]
    return backbone, ov.Model(scored, [*stand_ins, *graph_inputs], "head")


def _parameters_reached(results) -> set[str]:
    names, seen, stack = set(), set(), list(results)
    while stack:
        node = stack.pop()
        if node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        if node.get_type_name() == "Parameter":
            names.add(node.get_friendly_name())
        stack += [port.get_source_output().get_node() for port in node.inputs()]
    return names
