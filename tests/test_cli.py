import re
import shutil
import subprocess
import sys

import pytest

from rewardserve.bundle import load_bundle


def rewardserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewardserve.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["train", "export", "eval", "inspect", "serve"])
def test_every_subcommand_has_help(command):
    result = rewardserve(command, "--help")
    assert result.returncode == 0
    assert f"usage: rewardserve {command}" in result.stdout


def test_serve_refuses_a_missing_bundle_with_one_line_and_nonzero_exit(tmp_path):
    result = rewardserve("serve", "--bundle", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rewardserve: cannot serve: {tmp_path / 'nowhere' / 'manifest.json'}: not found "
        f"(is {tmp_path / 'nowhere'} a rewardserve bundle?)"
    ]


def test_inspect_prints_the_verified_manifest(tiny_bundle):
    manifest = load_bundle(tiny_bundle)
    result = rewardserve("inspect", str(tiny_bundle))
    assert result.returncode == 0, result.stderr
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())  # "key  value"
    assert fields["name"] == "tiny-test-model"
    assert fields["padding"] == f"right, pad id {manifest.input_format.pad_id}"
    assert fields["calibration T"] == f"{manifest.calibration_temperature:.4g}"
    assert fields["parity"].startswith(f"{manifest.parity.sequences} sequences")
    assert fields["sha256 model.onnx"] == manifest.files["model.onnx"]


def test_inspect_names_the_corrupted_file(tiny_bundle, tmp_path):
    broken = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, broken)
    with (broken / "tokenizer.json").open("a") as f:
        f.write(" ")
    result = rewardserve("inspect", str(broken))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rewardserve: cannot inspect: {broken / 'tokenizer.json'}: sha256 mismatch (corrupted or modified file)"
    ]
