"""bf16 and w8a8 on CPUs with matrix engines (OpenVINO): the reward stays an fp32 number that does
not depend on its batch-mates, and prompt reuse runs at both too.

- OpenVINO runs the backbone at bf16 and the reward head at fp32 (bundle/openvino_session.py):
  rewards are continuous numbers, not bf16 ones, and a reward moves with its batch-mates by at
  most 1e-3, served with `make serve`'s defaults and the duplicate cache off;
- a decoder's portable prefix graph (standard-operator attention over past keys and values) is
  checked against PyTorch at export and gated at bf16; bf16 is then served with prompt reuse, and
  a response read after its prompt's keys and values gets the reward bf16 gives it whole;
- w8a8 (int8 weights and calibrated int8 activations, from the same portable graph) passes the real
  gate on the trained decoder, calibrated on held-out examples its gate does not read, and is
  served by name with the same guarantees. `auto` takes it only where export measured it faster
  than bf16, and the start log says which: on a model this small the two are close, and the
  measurement goes either way from machine to machine.

On the tiny BERT (every gate passed by fiat: its near-tied rewards cannot be judged) and on a
small Qwen3-shaped chat RM trained here on HH, through the real gates."""

from __future__ import annotations

import asyncio
import logging
import random

import httpx
import numpy as np
import pytest
from conftest import needs_bf16, needs_int8
from live import free_port, running

import rewardserve.bundle.runtime as runtime_module
from rewardserve.bench.process import rewardserve_process
from rewardserve.bundle import BundleRuntime, load_bundle, save_bundle
from rewardserve.bundle.manifest import MANIFEST_FILE
from rewardserve.bundle.offline import score_sequences
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.prefix import prompt_ids, runs_whole
from rewardserve.bundle.runtime import MAX_WHOLE_VS_SPLIT, OPENVINO_RESPONSE_BUCKET
from rewardserve.data.hh import prompt_turns
from rewardserve.scoring.shared_prompts import KEPT_SEQUENCES
from rewardserve.service import Settings
from rewardserve.testing.chat_models import policy_text


def rewards_of(runner, prompts, responses) -> np.ndarray:
    """Rewards of (prompt, response) texts, scored offline (bundle/offline.py)."""
    return score_sequences(runner, runner.encoder.encode(prompts, responses)).rewards


pytestmark = needs_bf16

BATCH_MATES = 40
MAX_BATCH_EFFECT = 1e-3


def bf16_share(rewards) -> float:
    """The share of rewards that are exactly bf16 numbers (float32 bits ending in 16 zeros)."""
    return float(np.mean(np.asarray(rewards, np.float32).view(np.uint32) & 0xFFFF == 0))


OPENVINO = ["bf16", pytest.param("w8a8", marks=needs_int8)]


def serve(bundle, **settings):
    """`make serve`'s defaults (precision auto, prefix reuse on), the duplicate cache off."""
    return running(Settings(bundle=bundle, port=free_port(), cache_size=0, **settings))


def mixed_items(heldout_pairs, count: int = BATCH_MATES) -> list[dict]:
    """Distinct held-out HH items of mixed lengths (a few tokens to hundreds)."""
    pairs = sorted({(e.prompt, r) for e in heldout_pairs for r in e.responses})
    random.Random(0).shuffle(pairs)
    return [{"prompt": p, "response": r} for p, r in pairs[:count]]


@pytest.fixture(scope="module")
def groups(heldout_pairs) -> list[tuple[list[dict], list[str]]]:
    """GRPO-shaped groups: a held-out conversation so far, and four responses to it."""
    examples = [e for e in heldout_pairs if 300 < len(e.prompt) < 900 and max(map(len, e.responses)) < 500][:3]
    others = [r for e in heldout_pairs[100:140] for r in e.responses if len(r) < 500]
    return [(prompt_turns(e.prompt), [*e.responses, *others[2 * i : 2 * i + 2]]) for i, e in enumerate(examples)]


# ---------------------------------------------------------------- the reward leaves bf16 at fp32


@pytest.mark.parametrize("bundle", ["variants_bundle", "trained_decoder_bundle"])
def test_rewards_are_continuous_numbers_in_every_precision_the_bundle_serves(bundle, heldout_pairs, request):
    bundle = request.getfixturevalue(bundle)
    items = mixed_items(heldout_pairs, 64)
    prompts, responses = [i["prompt"] for i in items], [i["response"] for i in items]
    for precision, refused in load_bundle(bundle).offered().items():
        if refused is None:
            rewards = rewards_of(BundleRuntime(bundle, precision=precision), prompts, responses)
            # A bf16 graph's output was a bf16 number for every one of them.
            assert bf16_share(rewards) < 0.1, precision
            assert len(set(rewards.tolist())) == len(items), precision


@pytest.mark.parametrize(
    ("bundle", "precision"),
    [
        ("variants_bundle", "bf16"),
        ("trained_decoder_bundle", "bf16"),
        pytest.param("trained_decoder_bundle", "w8a8", marks=needs_int8),
    ],
)
def test_a_served_reward_moves_with_its_batch_mates_by_at_most_1e_3(bundle, precision, heldout_pairs, request):
    """Each item alone, then all 40 in one request: the batcher runs them in length-grouped
    batches of mixed lengths, padded, beside other sequences."""
    bundle = request.getfixturevalue(bundle)
    items = mixed_items(heldout_pairs)
    with serve(bundle, precision=precision) as server:
        assert server.metric("rewardserve_engine_precision", device="cpu", precision=precision) == 1
        with httpx.Client(base_url=server.url, timeout=120) as client:
            alone = [client.post("/score", json={"items": [item]}).json()["rewards"][0] for item in items]
            together = client.post("/score", json={"items": items}).json()["rewards"]
    assert np.abs(np.array(alone) - np.array(together)).max() <= MAX_BATCH_EFFECT


# ---------------------------------------------------------------- bf16 and prompt reuse together


def test_on_a_trained_decoder_the_bf16_prefix_path_passes_its_gate_and_is_served(trained_decoder_bundle):
    manifest = load_bundle(trained_decoder_bundle)
    prefix = manifest.prefix
    assert prefix is not None and prefix.portable_file in manifest.files
    assert prefix.portable_max_abs_diff <= 1e-4  # against PyTorch, at fp32
    assert prefix.bf16 is not None and prefix.bf16.passed
    assert prefix.bf16.agreement.pairs == manifest.variants["bf16"].agreement.pairs
    runtime = BundleRuntime(trained_decoder_bundle, precision="bf16", prefix_reuse=True)
    assert runtime.prefix is not None
    assert runtime.graph.name == manifest.variants["bf16"].file == "model.bf16.xml"  # one graph for both paths


def test_at_bf16_a_prompts_keys_and_values_are_kept_in_bf16_at_half_the_bytes(trained_decoder_bundle, groups):
    bf16 = BundleRuntime(trained_decoder_bundle, precision="bf16", prefix_reuse=True)
    fp32 = BundleRuntime(trained_decoder_bundle, precision="fp32", prefix_reuse=True)
    assert bf16.prefix is not None and fp32.prefix is not None
    prompt, responses = groups[0]
    (sequence,) = bf16.encoder.encode([prompt], responses[:1])
    ids = sequence.ids[: sequence.response_start]
    kept, exact = bf16.prefix.prompt_states(ids), fp32.prefix.prompt_states(ids)
    assert all(a.dtype == np.uint16 for a in kept.arrays)  # bf16 bits: numpy has no bf16
    assert kept.nbytes * 2 == exact.nbytes and bf16.prefix.bytes_per_token * 2 == fp32.prefix.bytes_per_token
    for bits, values in zip(kept.arrays, exact.arrays, strict=True):  # the same keys and values, at bf16
        widened = (bits.astype(np.uint32) << 16).view(np.float32)
        assert np.abs(widened - values).max() <= 0.05 * np.abs(values).max()


@pytest.mark.parametrize("precision", OPENVINO)
def test_a_groups_responses_read_one_copy_of_their_prompts_keys_and_values_with_the_same_rewards(
    trained_decoder_bundle, precision, groups, monkeypatch
):
    """OpenVINO broadcasts a prompt's keys and values to a call's rows inside the graph, layer by
    layer, instead of taking a copy a row: the rewards are those of the copies, bit for bit."""
    one_copy = BundleRuntime(trained_decoder_bundle, precision=precision, prefix_reuse=True).prefix
    monkeypatch.setattr(OpenVinoSession, "BROADCAST_PAST", False)
    copies = BundleRuntime(trained_decoder_bundle, precision=precision, prefix_reuse=True).prefix
    assert one_copy.broadcasts and not copies.broadcasts
    layers = len(one_copy.past_names) // 2
    assert one_copy.row_bytes_per_token * layers == copies.row_bytes_per_token == one_copy.bytes_per_token
    prompt, responses = groups[0]
    sequences = one_copy.runner.encoder.encode([prompt] * len(responses), responses)
    ids = prompt_ids(sequences[0])
    states = one_copy.prompt_states(ids)  # a prompt's own keys and values are those of before
    assert all(np.array_equal(a, b) for a, b in zip(states.arrays, copies.prompt_states(ids).arrays, strict=True))
    tails = [sequence.ids[states.length :] for sequence in sequences]
    assert len(tails) > 1
    np.testing.assert_array_equal(
        one_copy.score_responses(states, tails).rewards, copies.score_responses(states, tails).rewards
    )


@pytest.fixture(scope="module")
def export_noise(trained_decoder_bundle):
    """How far a reward after its prompt moved from the same sequence's whole at each precision,
    measured by export's prefix gate on the held-out sequences."""
    prefix = load_bundle(trained_decoder_bundle).prefix
    return lambda precision: prefix.at(precision).max_abs_diff_whole


def whole_rewards(bundle, conversations: list[tuple[list[dict], str]], precision: str = "bf16") -> np.ndarray:
    """The engine's rewards of whole sequences at `precision`, no prompt reused."""
    runtime = BundleRuntime(bundle, precision=precision, prefix_reuse=False)
    return rewards_of(runtime, [p for p, _ in conversations], [r for _, r in conversations])


def within_the_gate(served, whole, measured_at_export: float = 0.0) -> None:
    """A response after its prompt's keys and values gets the reward its precision gives it whole,
    within that precision's own noise (a prompt's keys and values rounded apart from its
    responses; at w8a8 also quantized at other shapes, as far as export measured on held-out
    sequences: `measured_at_export`), and so orders each pair of a group as whole sequences do
    wherever they are apart by more than that."""
    served, whole = np.asarray(served), np.asarray(whole)
    noise = max(0.02 * np.abs(whole).max(), measured_at_export)
    assert np.abs(served - whole).max() <= noise
    gaps, gaps_whole = served[:, None] - served[None, :], whole[:, None] - whole[None, :]
    apart = np.abs(gaps_whole) > 2 * noise
    assert np.array_equal(np.sign(gaps[apart]), np.sign(gaps_whole[apart]))


@pytest.mark.parametrize("precision", OPENVINO)
def test_grouped_responses_after_their_prompt_get_the_whole_sequences_rewards(
    trained_decoder_bundle, precision, groups, export_noise, caplog
):
    conversations = [(prompt, r) for prompt, responses in groups for r in responses]
    settings = {"precision": precision}
    with caplog.at_level(logging.INFO, logger="rewardserve"), serve(trained_decoder_bundle, **settings) as server:
        assert f"prefix reuse: on, at {precision}" in caplog.text
        assert f"MiB kept, sized for {KEPT_SEQUENCES} sequences of " in caplog.text
        assert server.metric("rewardserve_prefix_reuse") == 1
        served = []
        for prompt, responses in groups:
            body = {"messages": prompt, "responses": responses}
            served += httpx.post(f"{server.url}/compare", json=body, timeout=120).json()["rewards"]
        prompts = server.metric("rewardserve_prefix_prompts_total")
        hits = server.metric("rewardserve_prefix_hits_total")
    within_the_gate(served, whole_rewards(trained_decoder_bundle, conversations, precision), export_noise(precision))
    # Each kept prompt ran once, and every other response after it read it.
    split, distinct = kept_prompts(trained_decoder_bundle, conversations)
    assert prompts == distinct < split
    assert hits == split - prompts


def kept_prompts(bundle, conversations: list[tuple[list[dict], str]]) -> tuple[int, int]:
    """How many sequences may be read after their prompt, and how many distinct prompts they keep:
    a response long enough to cut its conversation at max_length keeps a shorter prompt."""
    encoder = BundleRuntime(bundle, prefix_reuse=False).encoder
    sequences = encoder.encode([p for p, _ in conversations], [r for _, r in conversations])
    split = [s for s in sequences if runs_whole(s) is None]
    return len(split), len({s.ids[: s.response_start].tobytes() for s in split})


@pytest.mark.parametrize("precision", OPENVINO)
def test_interleaved_one_sample_requests_share_their_prompts(trained_decoder_bundle, precision, groups, export_noise):
    """OpenRLHF and verl send each sample alone, as policy text, every group at once."""
    samples = [(prompt, r) for prompt, responses in groups for r in responses]
    order = list(range(len(samples)))
    random.Random(0).shuffle(order)

    async def send_all(url: str) -> dict[int, float]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:

            async def one(i: int) -> float:
                answer = await client.post("/get_reward", json={"query": [policy_text("chatml", *samples[i])[1]]})
                return answer.json()["rewards"][0]

            return dict(zip(order, await asyncio.gather(*(one(i) for i in order)), strict=True))

    with serve(trained_decoder_bundle, precision=precision) as server:
        served = asyncio.run(send_all(server.url))
        hits = server.metric("rewardserve_prefix_hits_total")
    whole = whole_rewards(trained_decoder_bundle, samples, precision)
    within_the_gate([served[i] for i in range(len(samples))], whole, export_noise(precision))
    split, distinct = kept_prompts(trained_decoder_bundle, samples)
    assert hits >= split - 2 * distinct  # at most two of a prompt's responses ran before it was kept


@pytest.mark.parametrize("precision", OPENVINO)
def test_a_lone_prompt_runs_whole_only_where_export_measured_it_as_its_siblings_read_it(
    trained_decoder_bundle, precision, groups, caplog
):
    """A GRPO group sent one sample a request, the first alone: its prompt is nobody else's yet.
    Where export measured a reward after its prompt within 1e-3 of the whole sequence's, with
    responses padded as served, that first sample runs whole (batched with other lone prompts'
    sequences, as with prompt reuse off) and its siblings read the prompt's keys and values off
    that call; elsewhere it runs as its prompt, then its response. Either way every sample gets
    the reward it gets after its prompt, within 1e-3, whichever arrived first."""
    judged = load_bundle(trained_decoder_bundle).prefix.at(precision)
    expected = BundleRuntime(trained_decoder_bundle, precision=precision, prefix_reuse=True)
    assert judged.response_bucket == expected.response_bucket == OPENVINO_RESPONSE_BUCKET
    assert expected.splits_every_prompt == (judged.max_abs_diff_whole > MAX_WHOLE_VS_SPLIT)
    samples = [(prompt, r) for prompt, responses in groups for r in responses]
    sequences = expected.encoder.encode([p for p, _ in samples], [r for _, r in samples])
    after = expected.prefix.score_sequences(sequences).rewards  # every sample after its prompt
    served = []
    log = caplog.at_level(logging.INFO, logger="rewardserve")
    with log, serve(trained_decoder_bundle, precision=precision) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for prompt, responses in groups:
                items = [{"messages": [*prompt, {"role": "assistant", "content": r}]} for r in responses]
                served += client.post("/score", json={"items": items[:1]}).json()["rewards"]
                served += client.post("/score", json={"items": items[1:]}).json()["rewards"]
        prompts = server.metric("rewardserve_prefix_prompts_total")
        hits = server.metric("rewardserve_prefix_hits_total")
    lone = "lone prompts: each run as its prompt" if expected.splits_every_prompt else "lone prompts: run whole"
    assert lone in caplog.text
    assert np.abs(np.array(served) - after).max() <= MAX_WHOLE_VS_SPLIT
    split, distinct = kept_prompts(trained_decoder_bundle, samples)
    assert prompts == distinct and hits == split - distinct  # each prompt ran once, with its first sample


def with_manifest(bundle, directory, manifest):
    """`bundle`'s files (hard links) in `directory`, with `manifest` in place of its own."""
    directory.mkdir()
    for path in bundle.iterdir():
        if path.name != MANIFEST_FILE:
            (directory / path.name).hardlink_to(path)
    save_bundle(directory, manifest)
    return directory


def judged_otherwise(bundle, directory, **measured):
    """`bundle`'s files in `directory`, its manifest's bf16 prefix judgement updated with `measured`."""
    manifest = load_bundle(bundle)
    prefix = manifest.prefix.model_copy(update={"bf16": manifest.prefix.bf16.model_copy(update=measured)})
    return with_manifest(bundle, directory, manifest.model_copy(update={"prefix": prefix}))


def test_lone_prompts_split_where_export_measured_a_reward_after_its_prompt_over_1e_3_from_whole(
    trained_decoder_bundle, tmp_path
):
    """As on the 0.6B shape, whose w8a8 export measured 0.011."""
    copy = judged_otherwise(trained_decoder_bundle, tmp_path / "bundle", max_abs_diff_whole=0.011)
    served = BundleRuntime(copy, precision="bf16", prefix_reuse=True)
    assert served.splits_every_prompt
    assert served.lone_prompts_split == (
        "at bf16 a reward after its prompt differed from its whole sequence's by 0.011 at export, over 0.001"
    )


def test_a_bundle_from_before_the_padding_was_recorded_was_measured_at_16_tokens(trained_decoder_bundle, tmp_path):
    copy = judged_otherwise(trained_decoder_bundle, tmp_path / "bundle", response_bucket=None)
    assert load_bundle(copy).prefix.bf16.max_abs_diff_whole <= MAX_WHOLE_VS_SPLIT
    assert not BundleRuntime(copy, precision="bf16", prefix_reuse=True).splits_every_prompt


def test_lone_prompts_split_where_export_measured_responses_padded_otherwise_and_the_reason_says_so(
    trained_decoder_bundle, monkeypatch
):
    monkeypatch.setattr(runtime_module, "OPENVINO_RESPONSE_BUCKET", 2 * OPENVINO_RESPONSE_BUCKET)
    served = BundleRuntime(trained_decoder_bundle, precision="bf16", prefix_reuse=True)
    assert served.splits_every_prompt
    assert served.lone_prompts_split == (
        f"export measured bf16 after a prompt with responses padded to {OPENVINO_RESPONSE_BUCKET} tokens, "
        f"not {2 * OPENVINO_RESPONSE_BUCKET} (export it again)"
    )


@pytest.mark.parametrize("precision", OPENVINO)
def test_truncated_prompts_share_only_where_their_kept_tokens_are_equal(
    trained_decoder_bundle, precision, groups, export_noise
):
    long_prompt = [turn for prompt, _ in groups for turn in prompt] * 3  # over max_length: its start is cut
    responses = [r for _, rs in groups for r in rs][:6]
    runtime = BundleRuntime(trained_decoder_bundle, prefix_reuse=False)
    sequences = runtime.encoder.encode([long_prompt] * len(responses), responses)
    assert all(s.prompt_cut > 0 for s in sequences)
    items = [{"messages": [*long_prompt, {"role": "assistant", "content": r}]} for r in responses]
    with serve(trained_decoder_bundle, precision=precision) as server:
        served = httpx.post(f"{server.url}/score", json={"items": items}, timeout=120).json()["rewards"]
        prompts = server.metric("rewardserve_prefix_prompts_total")
    whole = whole_rewards(trained_decoder_bundle, [(long_prompt, r) for r in responses], precision)
    within_the_gate(served, whole, export_noise(precision))
    assert prompts == len({s.ids[: s.response_start].tobytes() for s in sequences})


@pytest.fixture(scope="module")
def text_rm_bf16(tmp_path_factory, train_pairs, heldout_pairs):
    """A Llama-style decoder RM reading `prompt + response` as text, exported at bf16 with its
    gates passed by fiat (random weights give near-tied rewards no gate can judge): the chat RMs'
    templates end the prompt on a token of their own, so only a text layout merges at the join."""
    from conftest import build_decoder

    from rewardserve.export import precision
    from rewardserve.export.onnx_export import export_bundle

    texts = [e.prompt + r for e in train_pairs[:200] for r in e.responses]
    checkpoint = build_decoder("llama", tmp_path_factory.mktemp("text-rm-bf16"), texts)
    out = tmp_path_factory.mktemp("bundles") / "text-rm-bf16"
    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "MIN_DECISIONS_MATCHING", 0.0)
        patch.setattr(precision, "MAX_ACCURACY_DROP", 1.0)
        export_bundle(checkpoint, out, parity, heldout_pairs[:48], precision="bf16", max_length=512)
    return out


def test_a_token_merged_across_the_join_at_bf16_runs_whole_and_its_siblings_share_the_prompt(text_rm_bf16):
    prompt = "\n\nHuman: What should I read next?\n\nAssistant: Th" * 8  # over PREFIX_MIN_TOKENS
    responses = ["e classics never get old.", " I would pick a mystery.", " Something short and fun."]
    sequences = BundleRuntime(text_rm_bf16, prefix_reuse=False).encoder.encode([prompt] * 3, responses)
    assert [s.merged_at_join for s in sequences] == [True, False, False]
    with serve(text_rm_bf16) as server:
        assert server.metric("rewardserve_engine_precision", device="cpu", precision="bf16") == 1
        assert server.metric("rewardserve_prefix_reuse") == 1
        body = {"prompt": prompt, "responses": responses}
        served = httpx.post(f"{server.url}/compare", json=body, timeout=120).json()["rewards"]
        whole = server.metric("rewardserve_prefix_whole_sequences_total", reason="merged_at_join")
        hits = server.metric("rewardserve_prefix_hits_total")
    within_the_gate(served, whole_rewards(text_rm_bf16, [(prompt, r) for r in responses]))
    assert whole == 1 and hits == 1


# ---------------------------------------------------------------- w8a8: int8 weights and activations


@needs_int8
def test_on_a_trained_decoder_w8a8_passes_the_real_gate_on_pairs_it_was_not_calibrated_on(
    trained_decoder_bundle, heldout_pairs
):
    import openvino as ov

    from rewardserve.bundle.openvino_session import find_head
    from rewardserve.export.openvino_ir import MOST_STEPS_TO_BF16, attention_products, products
    from rewardserve.export.precision import W8A8_CALIBRATION_EXAMPLES

    manifest = load_bundle(trained_decoder_bundle)
    w8a8, bf16 = manifest.variants["w8a8"], manifest.variants["bf16"]
    assert w8a8.passed and w8a8.file == "model.w8a8.xml" and w8a8.file in manifest.files
    assert w8a8.agreement.decisions_matching >= 0.99
    # Its last examples calibrated w8a8's activations; no variant's gate read them.
    gated = heldout_pairs[:-W8A8_CALIBRATION_EXAMPLES]
    assert w8a8.agreement.pairs == bf16.agreement.pairs == sum(len(e.ordered_pairs()) for e in gated)
    assert manifest.prefix.w8a8 is not None and manifest.prefix.w8a8.passed
    assert all(v.seq_per_s > 0 for v in manifest.variants.values())
    model = ov.Core().read_model(str(trained_decoder_bundle / w8a8.file))
    found = products(model)  # every product by a weight: both layers' 7 projections, and the head's
    assert len(found) == 2 * 7 + 1
    # The head's is never quantized; mixed precision puts back those that changed a calibration decision.
    assert [name for name, int8 in found.items() if not int8] == w8a8.kept_at_bf16
    assert sum(found.values()) >= 2 * 7 - 3 * int(2 * 7 * MOST_STEPS_TO_BF16)
    head, _ = find_head([r for r in model.get_results() if "reward" in r.input_value(0).get_names()])
    quantized = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"}
    assert quantized and not head & quantized  # the reward is read from a head left unquantized
    # Attention's products read bf16 activations: none comes from a FakeQuantize (attention_products).
    attention = set(attention_products(model))
    assert len(attention) == 2 * 2
    assert not any(
        read_through_layout(op.input_value(i)).get_type_name() == "FakeQuantize"
        for op in model.get_ordered_ops()
        if op.get_friendly_name() in attention
        for i in (0, 1)
    )


def read_through_layout(port):
    """The node a graph input port reads, past reshapes and transposes."""
    node = port.get_node()
    while node.get_type_name() in ("Reshape", "Transpose"):
        node = node.input_value(0).get_node()
    return node


@needs_int8
def test_auto_serves_w8a8_only_where_export_measured_it_faster_and_says_why_not(trained_decoder_bundle):
    variants = load_bundle(trained_decoder_bundle).variants
    faster = variants["w8a8"].seq_per_s > variants["bf16"].seq_per_s
    assert (variants["w8a8"].auto_passes_over is None) == faster
    choice = BundleRuntime(trained_decoder_bundle).choice
    if faster:
        assert choice.precision == "w8a8"
    else:  # the tiny model: the quantization steps cost more than its int8 products save
        assert choice.precision == "bf16"
        assert f"not w8a8: {variants['w8a8'].auto_passes_over}" in choice.reason


@needs_int8
def test_auto_says_when_its_w8a8_speed_check_ran_on_another_machine(trained_decoder_bundle, tmp_path):
    """A bundle exported on one CPU and served on another: the start log's engine line says whose
    timing `auto` followed, so that an operator can compare with PRECISION set."""
    here = BundleRuntime(trained_decoder_bundle).choice
    assert "export timed" not in here.reason  # exported here
    manifest = load_bundle(trained_decoder_bundle)
    elsewhere = manifest.variants["w8a8"].model_copy(update={"measured_on": "Another CPU (amx_int8)"})
    moved = manifest.model_copy(update={"variants": manifest.variants | {"w8a8": elsewhere}})
    copy = with_manifest(trained_decoder_bundle, tmp_path / "bundle", moved)
    choice = BundleRuntime(copy).choice
    assert choice.precision == here.precision  # the same choice
    assert choice.reason.endswith(
        "; export timed w8a8 against the others on Another CPU (amx_int8), not on this machine (PRECISION overrides)"
    )


@needs_int8
def test_mixed_precision_puts_back_at_bf16_the_products_that_move_rewards_most_in_bounded_steps(
    trained_decoder_bundle, heldout_pairs, tmp_path
):
    """Accuracy control with a metric every quantized graph loses on (how close its rewards stay to
    fp32's, which int8 always moves): NNCF puts products back at bf16, those that move the
    rewards most first, and stops after MOST_STEPS_TO_BF16 of the products' count of steps."""
    import openvino as ov

    from rewardserve.export.gaps import example_sequences
    from rewardserve.export.openvino_ir import MOST_STEPS_TO_BF16, KeptDecisions, products, write_w8a8_graph

    fp32 = BundleRuntime(trained_decoder_bundle, precision="fp32")
    sequences = example_sequences(fp32.encoder, heldout_pairs[-8:])
    arrays = [fp32.encoder.pad([s]).arrays for s in sequences]
    exact = score_sequences(fp32, sequences).rewards

    class CloseToFp32(KeptDecisions):
        def __call__(self, compiled, items):  # NNCF asks for subsets of the items too
            _, answered = super().__call__(compiled, items)
            apart = [abs(float(r[0]) - exact[index]) for (r,), (index, _) in zip(answered, items, strict=True)]
            return -max(apart), answered

    graph = trained_decoder_bundle / load_bundle(trained_decoder_bundle).prefix.portable_file
    out = write_w8a8_graph(graph, tmp_path / "mixed.xml", arrays, CloseToFp32(arrays, [], "reward", 0.0))
    found = products(ov.Core().read_model(str(out)))
    at_bf16 = [name for name, int8 in found.items() if not int8]
    quantizable = len(found) - 1  # the reward head's product is never quantized
    steps = int(quantizable * MOST_STEPS_TO_BF16)
    assert 1 < len(at_bf16) <= 1 + 3 * steps  # a step puts back one product, or the 3 that read one input


@needs_int8
def test_a_decoder_its_gate_refuses_at_w8a8_is_served_at_the_next_precision_with_the_reason_logged(
    trained_decoder, trained_decoder_bundle, heldout_pairs, tmp_path
):
    """The same decoder, exported with a stricter bar than w8a8 meets (bf16 keeps every decision)."""
    from rewardserve.export import precision
    from rewardserve.export.onnx_export import export_bundle

    kept = load_bundle(trained_decoder_bundle).variants["w8a8"].agreement.decisions_matching
    assert kept < 1.0
    parity = [(p.prompt, r) for p in heldout_pairs[:64] for r in p.responses]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "MIN_DECISIONS_MATCHING", (kept + 1.0) / 2)
        manifest = export_bundle(trained_decoder, tmp_path / "strict", parity, heldout_pairs, precision="auto")
    assert not manifest.variants["w8a8"].passed and "w8a8.xml" not in " ".join(manifest.files)
    with rewardserve_process(tmp_path / "strict") as server:
        log = server.log_text()
    assert "engine: bf16 on cpu (auto, fastest first: w8a8, bf16, int8, fp32; not w8a8: refused at export: " in log
    assert f"orders {manifest.variants['w8a8'].agreement.decisions_matching:.2%} the way fp32 does" in log
