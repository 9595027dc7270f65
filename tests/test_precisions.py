"""Reduced-precision variants end to end: gated at export, chosen for the machine at start,
served, and forced by REWARDSERVE_PRECISION. The bf16 path runs for real where this CPU has bf16
instructions (OpenVINO), and is skipped with the reason where it does not."""

from __future__ import annotations

import platform
import subprocess
import sys

import httpx
import numpy as np
import pytest
from conftest import THIS_MACHINE, needs_bf16

from rewardserve.bench.process import free_port, rewardserve_process
from rewardserve.bundle import BundleRuntime, load_bundle
from rewardserve.bundle.engine_choice import Machine
from rewardserve.bundle.offline import score_sequences
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.export import precision
from rewardserve.export.onnx_export import export_bundle
from rewardserve.export.precision import PrecisionRefused


def rewards_of(runner, prompts, responses) -> np.ndarray:
    """Rewards of (prompt, response) texts, scored offline (bundle/offline.py)."""
    return score_sequences(runner, runner.encoder.encode(prompts, responses)).rewards


WITHOUT_BF16 = Machine(
    "a CPU with VNNI, without bf16", frozenset({"avx512f", "avx512_vnni"}), cuda=False, openvino=True
)
ITEMS = [{"prompt": "\n\nHuman: How do I boil an egg?", "response": r} for r in ("Simmer it 9 minutes.", "No idea.")]


@needs_bf16
def test_bf16_is_gated_on_openvino_and_ships_as_openvino_ir_with_fp16_weights(variants_bundle):
    manifest = load_bundle(variants_bundle)
    bf16 = manifest.variants["bf16"]
    assert bf16.passed and bf16.file == "model.bf16.xml" and bf16.agreement.pairs == 48
    # bf16 really ran (fp32 in OpenVINO is within ~1e-6 of PyTorch), and its head ran at fp32: the
    # reward read out of a bf16 graph differed by up to a bf16 step, 0.4% of its size
    assert 1e-5 < bf16.parity.max_rel_diff < 1e-3
    assert "amx_bf16" in bf16.measured_on or "avx512_bf16" in bf16.measured_on
    assert set(manifest.files) == {
        "model.onnx",
        "model.int8.onnx",
        "model.bf16.xml",
        "model.bf16.bin",
        "tokenizer.json",
    }
    # fp16 weights: half the fp32 graph's bytes
    sizes = {name: (variants_bundle / name).stat().st_size for name in ("model.onnx", "model.bf16.bin")}
    assert 0.4 < sizes["model.bf16.bin"] / sizes["model.onnx"] < 0.6


@needs_bf16
def test_on_this_bf16_cpu_auto_runs_bf16_in_openvino_close_to_fp32(variants_bundle, heldout_pairs):
    bf16 = BundleRuntime(variants_bundle)
    fp32 = BundleRuntime(variants_bundle, precision="fp32")
    assert bf16.choice.precision == "bf16" and isinstance(bf16.session, OpenVinoSession)
    prompts = [p.prompt for p in heldout_pairs[:32] for _ in p.responses]
    responses = [r for p in heldout_pairs[:32] for r in p.responses]
    reduced, full = rewards_of(bf16, prompts, responses), rewards_of(fp32, prompts, responses)
    assert np.abs(reduced - full).max() <= 0.05 * np.abs(full).max()
    assert not np.array_equal(reduced, full)


def test_without_bf16_instructions_auto_serves_int8_and_says_why_not_bf16(variants_bundle):
    runtime = BundleRuntime(variants_bundle, machine=WITHOUT_BF16)
    assert runtime.choice.precision == "int8" and runtime.graph.name == "model.int8.onnx"
    manifest = load_bundle(variants_bundle)
    if "bf16" in manifest.variants:
        assert "not bf16: this CPU has no bf16 instructions" in runtime.choice.reason
    else:  # not gated where this bundle was exported
        assert "not bf16: the bundle has no bf16 variant" in runtime.choice.reason


def test_the_server_says_at_start_which_precision_it_serves_and_why(variants_bundle):
    runtime = BundleRuntime(variants_bundle)
    expected = runtime.choice
    with rewardserve_process(variants_bundle) as server:
        scored = httpx.post(f"{server.url}/score", json={"items": ITEMS}, timeout=30)
        metrics = httpx.get(f"{server.url}/metrics").text
        log = server.log_text()
    assert scored.status_code == 200 and len(scored.json()["rewards"]) == 2
    assert f"engine: {expected.precision} on cpu ({expected.reason}; {THIS_MACHINE.describe()})" in log
    assert f'rewardserve_engine_precision{{device="cpu",precision="{expected.precision}"}} 1.0' in metrics
    # What loading said is in the start log too, held until the log was set up (bf16: its buckets).
    assert (f"length buckets of {runtime.length_bucket} tokens" in log) == (runtime.length_bucket > 1)
    glibc = platform.libc_ver()[0] == "glibc"
    assert ("allocator: blocks of 128 KiB or more are returned when freed" in log) == glibc


def test_precision_forces_a_variant_for_benchmarks(variants_bundle):
    expected = BundleRuntime(variants_bundle, precision="fp32")
    want = rewards_of(expected, [i["prompt"] for i in ITEMS], [i["response"] for i in ITEMS])
    with rewardserve_process(
        variants_bundle, env={"REWARDSERVE_PRECISION": "fp32", "REWARDSERVE_CACHE_SIZE": "0"}
    ) as s:
        got = httpx.post(f"{s.url}/score", json={"items": ITEMS}, timeout=30).json()["rewards"]
        assert "engine: fp32 on cpu (fp32 asked for;" in s.log_text()
    assert got == pytest.approx(want.tolist(), abs=1e-5)


def test_a_precision_the_bundle_lacks_is_refused_at_start_in_one_line(variants_bundle, monkeypatch):
    monkeypatch.setenv("REWARDSERVE_PRECISION", "fp16")
    command = [sys.executable, "-m", "rewardserve.cli", "serve", "--bundle", str(variants_bundle)]
    result = subprocess.run([*command, "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "rewardserve: cannot serve: precision fp16 cannot be served: the bundle has no fp16 variant"
    ]


def test_inspect_lists_each_variant_with_its_gate_figures(variants_bundle):
    result = subprocess.run(
        [sys.executable, "-m", "rewardserve.cli", "inspect", str(variants_bundle)], capture_output=True, text=True
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("variant")]
    assert any(line.split()[1] == "int8" and "passed, model.int8.onnx: 48 held-out pairs" in line for line in lines)


@needs_bf16
def test_a_reopened_bf16_session_scores_as_before(variants_bundle):
    # What the engine does after a fault (scoring/engine.py): a fresh session on the same graph.
    runtime = BundleRuntime(variants_bundle, precision="bf16")
    batch = runtime.encoder.pad(runtime.encoder.encode([i["prompt"] for i in ITEMS], [i["response"] for i in ITEMS]))
    before = runtime.score(batch).rewards
    runtime.reopen()
    assert isinstance(runtime.session, OpenVinoSession) and runtime.score(batch).rewards.tolist() == before.tolist()


def decoder_parity_pairs(heldout_pairs) -> list[tuple[str, str]]:
    return [(p.prompt, r) for p in heldout_pairs[:64] for r in p.responses]


def test_on_a_trained_decoder_the_real_gate_ships_int4_and_refuses_dynamic_int8(
    trained_decoder, heldout_pairs, tmp_path
):
    parity = decoder_parity_pairs(heldout_pairs)
    manifest = export_bundle(trained_decoder, tmp_path / "int4", parity, heldout_pairs, precision="int4")
    assert manifest.input_format.layout == "chat" and manifest.reference.max_abs_diff < 1e-4
    int4 = manifest.variants["int4"]
    assert int4.agreement.pairs == sum(len(e.ordered_pairs()) for e in heldout_pairs)
    assert int4.agreement.accuracy_fp32 > 0.55  # the model ranks: the gate judges decisions, not ties
    # Weight-only int4 keeps the activations in fp32 and keeps the decisions (99.5% here) ...
    assert int4.passed and int4.agreement.decisions_matching >= precision.MIN_DECISIONS_MATCHING
    # ... dynamic int8 quantises the activations per batch too, and flips 2.8% of them.
    with pytest.raises(PrecisionRefused) as refused:
        export_bundle(trained_decoder, tmp_path / "int8", parity, heldout_pairs, precision="int8")
    assert refused.value.agreement.decisions_matching < precision.MIN_DECISIONS_MATCHING
    assert not (tmp_path / "int8").exists()


@needs_bf16
def test_a_decoder_runs_bf16_from_its_portable_prefix_graph_with_fp16_weights(trained_decoder_bundle, heldout_pairs):
    """OpenVINO cannot read onnxruntime's GroupQueryAttention: a decoder bundle's bf16 variant is
    written from the portable prefix graph (standard operators; it scores whole sequences after an
    empty past), in OpenVINO's format with fp16 weights, half the fp32 weights file. It passes the
    real gate on the trained decoder."""
    manifest = load_bundle(trained_decoder_bundle)
    assert manifest.graph.builder == "decoder"
    assert manifest.variants["bf16"].passed and manifest.variants["bf16"].file == "model.bf16.xml"
    assert {"model.onnx", "model.onnx.data", "model.prefix.portable.onnx", "model.bf16.bin"} <= set(manifest.files)
    data = {name: (trained_decoder_bundle / name).stat().st_size for name in ("model.onnx.data", "model.bf16.bin")}
    assert 0.4 < data["model.bf16.bin"] / data["model.onnx.data"] < 0.6
    bf16 = BundleRuntime(trained_decoder_bundle, precision="bf16")
    fp32 = BundleRuntime(trained_decoder_bundle, precision="fp32")
    assert isinstance(bf16.session, OpenVinoSession)
    prompts, responses = zip(*decoder_parity_pairs(heldout_pairs)[:32], strict=True)
    expected = rewards_of(fp32, prompts, responses)
    scored = rewards_of(bf16, prompts, responses)
    np.testing.assert_allclose(scored, expected, rtol=0, atol=0.05 * np.abs(expected).max())


def test_a_weight_beyond_fp16s_range_keeps_the_bf16_variant_on_the_fp32_graph(tmp_path):
    """OpenVINO's fp16 compression would clamp 1e6 to 65504 silently: the IR is refused, loudly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from rewardserve.export.openvino_ir import NotCompressible, write_bf16_graph

    weight = np.full((4, 2), 0.5, np.float32)
    weight[0, 0] = 1e6
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["reward"])],
        "beyond",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("reward", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "model.onnx")
    with pytest.raises(NotCompressible, match="beyond fp16's range"):
        write_bf16_graph(tmp_path / "model.onnx", tmp_path / "model.bf16.xml")
    assert precision.derive(tmp_path / "model.onnx", tmp_path / "model.onnx", "bf16") == tmp_path / "model.onnx"
