import json
import shutil

import pytest

from rewardserve.bundle import BundleError, load_bundle


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def test_manifest_lists_the_sha256_of_every_file_and_the_parity_report(tiny_bundle):
    manifest = load_bundle(tiny_bundle)
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}
    assert all(len(digest) == 64 for digest in manifest.files.values())
    assert manifest.parity.sequences == 256  # the fixture's 128 pairs, both responses
    assert manifest.parity.max_abs_diff <= 1e-4
    assert manifest.input_format.truncation == "prompt_left"


def test_corrupted_file_is_named(bundle_copy):
    with (bundle_copy / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match=r"tokenizer\.json: sha256 mismatch"):
        load_bundle(bundle_copy)


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: missing"):
        load_bundle(bundle_copy)


def test_missing_manifest_and_other_schema_versions_are_refused(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="manifest.json: not found"):
        load_bundle(tmp_path)
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(bundle_copy)


def test_a_manifest_from_before_multi_output_models_loads_as_one_scalar_reward(bundle_copy):
    from rewardserve.bundle import BundleRuntime

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    for older in ("outputs",):  # fields later schema-1 manifests added
        manifest.pop(older)
    for record in ("parity", "reference"):
        if manifest.get(record):
            manifest[record].pop("by_output", None)
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    runtime = BundleRuntime(bundle_copy)
    assert runtime.manifest.outputs.describe() == "one scalar reward" and runtime.output_names == ["reward"]
    scores = runtime.score(runtime.encoder.encode_batch(["\n\nHuman: Hi"], ["Hello there."]))
    assert scores.rewards.shape == (1,) and scores.extra(0) is None


def test_io_binding_gives_the_same_rewards_as_a_plain_run(tiny_bundle):
    # The CUDA path runs batches through IO binding; here it is exercised on the CPU provider.
    from rewardserve.bundle import BundleRuntime

    plain = BundleRuntime(tiny_bundle)
    bound = BundleRuntime(tiny_bundle)
    bound.io_binding = True
    batch = plain.encoder.encode_batch(["\n\nHuman: Hi", "\n\nHuman: Why?"], ["Hello there.", "Because " * 30])
    assert not plain.io_binding
    assert bound.score(batch).rewards.tolist() == pytest.approx(plain.score(batch).rewards.tolist(), abs=1e-6)


def test_bundle_digest_identifies_the_files(tiny_bundle, bundle_copy):
    from rewardserve.bundle import bundle_digest

    manifest = load_bundle(tiny_bundle)
    assert bundle_digest(manifest) == bundle_digest(load_bundle(bundle_copy))
    changed = manifest.model_copy(update={"files": {**manifest.files, "model.onnx": "0" * 64}})
    assert bundle_digest(changed) != bundle_digest(manifest)
