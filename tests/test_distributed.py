"""Multi-GPU training goes through torchrun: two processes on CPU (gloo) stand in for GPUs
(NCCL), running `rewardserve train` exactly as the training Job in k8s/training does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_rewardserve_train_runs_under_torchrun(tiny_base_model, tmp_path):
    bin_dir = Path(sys.executable).parent
    out = tmp_path / "checkpoint"
    command = [
        str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python",
        str(bin_dir / "rewardserve"), "train", f"--base-model={tiny_base_model}", f"--out={out}",
        "--max-steps=3", "--batch-size=8", "--max-length=128", "--checkpoint-steps=0",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "training_metrics.json").read_text())
    assert metrics["steps"] == 3
    assert (out / "rewardserve_input_format.json").exists()  # written last, by rank 0 alone
    assert done.stdout.count("trained on ") == 2  # both ranks trained; rank 0 alone wrote the checkpoint
