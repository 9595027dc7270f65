"""Decoder reward graphs written from the weights (export/decoder_graph.py): for each family,
both flavors give transformers' own reward, alone and in right-padded batches of mixed lengths;
the fused one with onnxruntime's fused attention and norms; and what the builder cannot write is
refused with the reason, for export to trace instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from rewardserve.bundle import InputFormat
from rewardserve.export import decoder_config, decoder_graph, decoder_weights
from rewardserve.export.decoder_graph import NotBuildable, build

TOLERANCE = 1e-4  # fp32, absolute: the fidelity contract
VOCAB = 300
PAD = 0
# Grouped-query attention (4 query heads over 2 key-value heads), head size 16 (GroupQueryAttention's
# CPU kernel takes multiples of 16), and each family's own features.
SHAPE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=PAD,
    num_labels=1,
)
FAMILIES = {
    "llama": lambda: LlamaConfig(**SHAPE, attention_bias=True, mlp_bias=True),
    "llama-3.2 rope scaling": lambda: LlamaConfig(
        **SHAPE,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "mistral": lambda: MistralConfig(**SHAPE, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**SHAPE),  # q/k/v biases
    "qwen3": lambda: Qwen3Config(**SHAPE, head_dim=32),  # q/k RMSNorm per head; heads * head_dim != hidden
    # Sliding layers (window 8, shorter than the sequences) beside global ones, soft-capped logits,
    # attention scaled by query_pre_attn_scalar, (1 + w) norms around attention and MLP, GeGLU.
    "gemma2": lambda: Gemma2Config(
        **SHAPE, head_dim=16, query_pre_attn_scalar=24, attn_logit_softcapping=5.0, sliding_window=8
    ),
    # q/k norms, and the sliding layers' own rotary base beside the global layers' scaled one.
    "gemma3": lambda: Gemma3TextConfig(
        **SHAPE,
        head_dim=16,
        query_pre_attn_scalar=24,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        },
    ),
}


def random_model(config) -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():  # rewards that differ visibly between sequences
        model.score.weight.normal_(0, 1.0)
    return model


def chat_format(max_length: int = 128, padding_side: str = "right") -> InputFormat:
    return InputFormat(
        prefix_ids=[],
        separator_ids=[],
        suffix_ids=[],
        pad_id=PAD,
        max_length=max_length,
        token_type_ids=False,
        position_ids=True,
        layout="chat",
        padding_side=padding_side,
    )


def right_padded(lengths: list[int]) -> dict[str, np.ndarray]:
    """A batch of random token ids (never the pad id) of `lengths`, padded on the right."""
    rng = np.random.default_rng(1)
    return right_padded_rows([rng.integers(1, VOCAB, length) for length in lengths])


def transformers_rewards(model: torch.nn.Module, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The model's own class on each sequence alone, unpadded: the reference."""
    with torch.inference_mode():
        rows = zip(batch["input_ids"], batch["attention_mask"].sum(1), strict=True)
        return np.array([float(model(input_ids=torch.from_numpy(ids[:n][None])).logits[0, 0]) for ids, n in rows])


def graph_rewards(graph: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return session.run(["reward"], batch)[0]


@pytest.fixture(scope="module", params=list(FAMILIES))
def built(request, tmp_path_factory):
    model = random_model(FAMILIES[request.param]())
    return model, build(model, chat_format(), tmp_path_factory.mktemp("built"))


def test_both_flavors_give_transformers_reward_alone_and_in_padded_batches(built):
    model, graphs = built
    batch = right_padded([23, 5, 17, 1, 40])
    expected = transformers_rewards(model, batch)
    assert np.ptp(expected) > 0.1  # rewards that can tell a wrong position apart
    for graph in (graphs.graph, graphs.portable):
        np.testing.assert_allclose(graph_rewards(graph, batch), expected, atol=TOLERANCE, rtol=0)
        alone = [graph_rewards(graph, right_padded([n]))[0] for n in (23,)]
        np.testing.assert_allclose(alone, expected[:1], atol=TOLERANCE, rtol=0)


def test_the_fused_flavor_runs_attention_and_norms_in_fused_operators(built):
    model, graphs = built
    layers = model.config.num_hidden_layers
    assert graphs.why_unfused is None
    assert graphs.fused_operators["GroupQueryAttention"] == layers
    assert graphs.fused_operators["SkipSimplifiedLayerNormalization"] == 2 * layers
    ops = {node.op_type for node in onnx.load(str(graphs.portable), load_external_data=False).graph.node}
    assert "GroupQueryAttention" not in ops and {"Softmax", "MatMul"} <= ops  # OpenVINO reads these


def test_weights_live_once_in_external_data_both_graphs_read(built):
    model, graphs = built
    data = graphs.graph.parent / decoder_graph.DATA_FILE
    weights = sum(p.numel() * 4 for p in model.parameters())
    head_dim = getattr(model.config, "head_dim", None) or 16
    rope_kinds = len(decoder_config.rope_parameters(model.config))  # Gemma 3: one per layer type
    rotary_tables = rope_kinds * 2 * chat_format().max_length * head_dim // 2 * 4
    alignment = decoder_weights.ALIGNMENT * (len(list(model.parameters())) + 2 * rope_kinds)  # each starts a page
    assert weights + rotary_tables <= data.stat().st_size <= weights + rotary_tables + alignment
    for graph in (graphs.graph, graphs.portable):
        assert graph.stat().st_size < 200_000
        locations = {
            entry.value
            for tensor in onnx.load(str(graph), load_external_data=False).graph.initializer
            for entry in tensor.external_data
            if entry.key == "location"
        }
        assert locations == {data.name}


def test_a_reward_read_at_the_last_token_that_is_not_the_pad_id(tmp_path):
    """The chat layout reads where the model's own class does: a trailing pad-id token inside the
    mask (pad == eos models that end on their EOS) is skipped."""
    model = random_model(FAMILIES["qwen2"]())
    graphs = build(model, chat_format(), tmp_path)
    batch = right_padded([9, 14])
    batch["input_ids"][0, 8] = PAD  # a real token that is the pad id, last in its row
    with torch.inference_mode():
        expected = [float(model(input_ids=torch.from_numpy(batch["input_ids"][0, :9][None])).logits[0, 0])]
    np.testing.assert_allclose(graph_rewards(graphs.graph, batch)[:1], expected, atol=TOLERANCE, rtol=0)


def test_a_head_size_the_fused_attention_cannot_run_gets_the_portable_graph_and_the_reason(tmp_path):
    model = random_model(LlamaConfig(**{**SHAPE, "hidden_size": 32}))  # 4 heads of 8
    graphs = build(model, chat_format(), tmp_path)
    assert graphs.graph == graphs.portable == tmp_path / "model.onnx"
    assert "head size 8 is not a multiple of 16" in graphs.why_unfused
    batch = right_padded([7, 12])
    np.testing.assert_allclose(graph_rewards(graphs.graph, batch), transformers_rewards(model, batch), atol=TOLERANCE)


@pytest.mark.parametrize(
    ("config", "fmt", "reason"),
    [
        (lambda: LlamaConfig(**SHAPE), chat_format(padding_side="left"), "needs right padding"),
        (lambda: MistralConfig(**SHAPE, sliding_window=64), chat_format(max_length=128), "sliding-window"),
        (lambda: LlamaConfig(**SHAPE, hidden_act="gelu"), chat_format(), "only SwiGLU"),
        (
            lambda: LlamaConfig(**SHAPE, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}),
            chat_format(),
            "depends on the sequence length",
        ),
    ],
    ids=["left padding", "short sliding window", "gelu", "dynamic rope"],
)
def test_what_the_builder_does_not_write_is_refused_with_the_reason(config, fmt, reason, tmp_path):
    with pytest.raises(NotBuildable, match=reason):
        build(random_model(config()), fmt, tmp_path)


def test_int8_of_a_built_graph_is_quantized_weight_by_weight_as_onnxruntime_would(tmp_path):
    """A graph with external data is quantized one weight at a time (onnxruntime's quantizer holds
    several copies of the model): the same dynamic int8 rewards as onnxruntime's quantize_dynamic,
    the int8 weights in a data file of their own, the others read from the fp32 graph's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rewardserve.export import precision

    model = random_model(FAMILIES["qwen3"]())
    graphs = build(model, chat_format(), tmp_path / "built")
    int8 = tmp_path / "built" / "model.int8.onnx"
    precision.quantize_int8(graphs.graph, int8)
    proto = onnx.load(str(int8), load_external_data=False)
    projections = 7 * model.config.num_hidden_layers + 1  # q, k, v, o, gate, up, down; the score head
    assert [n.op_type for n in proto.graph.node].count("DynamicQuantizeMatMul") == projections
    assert "MatMul" not in {n.op_type for n in proto.graph.node}
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data", "model.int8.onnx.data"}
    reference = tmp_path / "ort" / "model.int8.onnx"
    reference.parent.mkdir()
    quantize_dynamic(
        graphs.graph,
        reference,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        use_external_data_format=True,
    )
    batch = right_padded([23, 5, 17, 1, 40])
    expected = graph_rewards(reference, batch)
    assert np.abs(expected - transformers_rewards(model, batch)).max() > 1e-4  # int8 is not fp32
    np.testing.assert_allclose(graph_rewards(int8, batch), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_a_token_classifier_answers_its_step_class_probability_at_every_position(family, tmp_path):
    from transformers import AutoModelForTokenClassification

    from rewardserve.bundle.outputs import ModelOutputs, Steps

    torch.manual_seed(0)
    config = FAMILIES[family]()
    config.num_labels = 2
    model = AutoModelForTokenClassification.from_config(config).eval()
    graphs = build(model, chat_format(), tmp_path, ModelOutputs(steps=Steps(separator="<s>", token_id=7)))
    batch = right_padded([23, 5, 17])
    for graph in (graphs.graph, graphs.portable):
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        (served,) = session.run(["step_rewards"], batch)
        for row, length in enumerate(batch["attention_mask"].sum(1)):
            with torch.inference_mode():
                logits = model(input_ids=torch.from_numpy(batch["input_ids"][row, :length][None])).logits[0]
            expected = torch.softmax(logits, -1)[:, 1].numpy()
            np.testing.assert_allclose(served[row, :length], expected, atol=TOLERANCE, rtol=0)


def test_a_head_of_several_objectives_answers_them_and_the_reward_its_rule_makes(tmp_path):
    from rewardserve.bundle.outputs import ModelOutputs, Objectives

    config = FAMILIES["qwen3"]()
    config.num_labels = 3
    model = random_model(config)
    rule = Objectives(names=["a", "b", "c"], scalar="weights", weights=[1.0, -0.5, 2.0])
    graphs = build(model, chat_format(), tmp_path, ModelOutputs(objectives=rule))
    batch = right_padded([23, 5, 17])
    with torch.inference_mode():
        rows = zip(batch["input_ids"], batch["attention_mask"].sum(1), strict=True)
        expected = np.stack([model(input_ids=torch.from_numpy(ids[:n][None])).logits[0].numpy() for ids, n in rows])
    for graph in (graphs.graph, graphs.portable):
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        reward, objectives = session.run(["reward", "objectives"], batch)
        np.testing.assert_allclose(objectives, expected, atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(reward, expected @ np.array([1.0, -0.5, 2.0]), atol=TOLERANCE, rtol=0)


def prompt_and_response_rewards(
    graphs, prompts: list[np.ndarray], responses: list[tuple[int, np.ndarray]]
) -> np.ndarray:
    """Rewards of (prompt index, response) rows: the prompts run once through the prefix graph
    with an empty past, their keys and values then read by every response of theirs, in one
    right-padded batch."""
    session = ort.InferenceSession(str(graphs.prefix), providers=["CPUExecutionProvider"])
    cache = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
    ids, mask = padded(prompts)
    empty = {
        i.name: np.zeros((len(prompts), i.shape[1], 0, i.shape[3]), np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past.")
    }
    feeds = {"input_ids": ids, "attention_mask": mask, "prefix_lengths": np.zeros(len(prompts), np.int64)}
    present = dict(zip(cache, session.run(cache, feeds | empty), strict=True))
    rows = [p for p, _ in responses]
    feeds = {name.replace("present", "past"): value[rows] for name, value in present.items()}
    ids, mask = padded([r for _, r in responses])
    feeds |= {"input_ids": ids, "attention_mask": mask, "prefix_lengths": np.array([len(prompts[p]) for p in rows])}
    return session.run(["reward"], feeds)[0]


def padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(rows), max(map(len, rows))), PAD, np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


@pytest.mark.parametrize("family", list(FAMILIES))
def test_responses_scored_against_a_prompt_run_once_get_the_whole_sequences_rewards(family, tmp_path):
    model = random_model(FAMILIES[family]())
    graphs = build(model, chat_format(), tmp_path, prefix=True)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(1, VOCAB, n) for n in (30, 12)]  # of different lengths: padded keys and values
    responses = [(0, rng.integers(1, VOCAB, n)) for n in (5, 17, 1)] + [(1, rng.integers(1, VOCAB, n)) for n in (9, 20)]
    whole = [np.concatenate([prompts[p], r]) for p, r in responses]
    expected = graph_rewards(graphs.graph, right_padded_rows(whole))
    np.testing.assert_allclose(
        prompt_and_response_rewards(graphs, prompts, responses), expected, atol=TOLERANCE, rtol=0
    )


def right_padded_rows(rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    ids, mask = padded(rows)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": np.tile(np.arange(ids.shape[1]), (len(rows), 1))}
