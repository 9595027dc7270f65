"""The agreement gate on a decoder reward model trained here: random-weight models give
near-tied rewards that no gate can judge, so this trains a small Qwen3-shaped chat RM on HH-RLHF
and exports it with `--precision auto`, then prints what each reduced precision did on the
held-out pairs against fp32.

    python benchmarks/decoder_gate.py                       # ~15 min on 2 cores
    python benchmarks/decoder_gate.py --max-steps 2000

The model is real_size_export.py's `qwen3-small` shape (4 layers, hidden 256, grouped-query
attention, ChatML), initialised at random and trained with `rewardserve train` (Bradley-Terry,
one pass or --max-steps); its export goes through the decoder graph builder like a real-size
one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from real_size_export import build

from rewardserve.bundle import load_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("models/decoder-gate"))
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()

    base = build("qwen3-small", args.work / "base")
    trained, bundle = args.work / "trained", args.work / "bundle"
    cli = [sys.executable, "-m", "rewardserve.cli"]
    if not (trained / "config.json").is_file():
        train = [*cli, "train", "--base-model", str(base), "--out", str(trained), "--max-steps", str(args.max_steps)]
        train += ["--max-length", str(args.max_length), "--learning-rate", "3e-4", "--batch-size", "16"]
        subprocess.run(train, check=True)
    export = [*cli, "export", str(trained), "--out", str(bundle), "--precision", "auto"]
    subprocess.run(export, check=True)
    manifest = load_bundle(bundle)
    print(f"\n{manifest.name}: graph {manifest.graph.builder or 'traced'}, fused {manifest.graph.fused_operators}")
    print(f"parity {manifest.parity.max_abs_diff:.2g}, reference {manifest.reference.max_abs_diff:.2g}")
    for precision, variant in manifest.variants.items():
        gate = variant.agreement
        verdict = "ships" if variant.passed else "refused"
        print(
            f"{precision}: {verdict}; {gate.decisions_matching:.2%} of {gate.pairs} held-out pairs ordered as fp32, "
            f"accuracy {gate.accuracy:.4f} against fp32's {gate.accuracy_fp32:.4f}"
        )


if __name__ == "__main__":
    main()
