import subprocess
import sys

import pytest


def rewardserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewardserve.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["train", "export", "eval", "serve"])
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
