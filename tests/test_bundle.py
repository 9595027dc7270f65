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
