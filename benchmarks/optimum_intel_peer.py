"""Served rewardserve against optimum-intel in-process (OpenVINO used directly, no server), on the
same decoder reward model and the same conversations, side by side in one run.

    python benchmarks/optimum_intel_peer.py --optimum-python ../venv-optimum/bin/python \\
        --bundle models/real-size/qwen3-0.6b/bundle-auto \\
        --checkpoint models/real-size/qwen3-0.6b/checkpoint          # ~25 min on 2 cores

optimum-intel runs in its own virtual environment (benchmarks/optimum_intel_worker.py says how
to make it), at bf16, int8 weights and calibrated W8A8; rewardserve serves the bundle at `auto`
with its duplicate cache off. Two loads:
- distinct HH pairs (no prompt shared): rewardserve takes 64 clients x 8 items and 128 x 1 (the
  shapes of served_vs_vllm.py), optimum-intel scores the same conversations 8 and 1 a call. Their
  ratio is what serving costs: a queue, HTTP, JSON (target >= 0.9x);
- GRPO groups (held-out HH prompts of about P tokens, G responses each, prefix_served.py's):
  one `/compare` a group to rewardserve, the group's G conversations in one call to optimum-intel,
  each group timed alone. Their ratio is what reading each prompt once gains (target >= 1.5x).
Every conversation is the bundle's chat template's rendering; optimum-intel tokenizes it as its
users do (no special tokens added: the template writes them). Before measuring, each peer's
rewards on the warm-up pairs are checked against rewardserve fp32 in-process (max |diff|).
Rounds interleave the engines on items of their own; figures are medians over rounds (distinct)
or groups (GRPO), and ratios are taken round by round. W8A8 is calibrated on held-out HH
conversations that no load measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from prefix_served import group_rates, held_out_texts, make_groups, rendered

from rewardserve.bench.load import run_load
from rewardserve.bench.process import rewardserve_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.chat import as_turns, render
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.offline import score_sequences

HERE = Path(__file__).parent
SHAPES = {"64 x 8": (64, 8), "128 x 1": (128, 1)}  # rewardserve's clients x items; optimum-intel's batch is the items
WARM_UP = 32
CALIBRATION = 64  # W8A8's calibration conversations (rewardserve's own export calibrates on its own)
TARGET_SERVING = 0.9  # distinct pairs: rewardserve / optimum-intel at the same precision
TARGET_REUSE = 1.5  # GRPO groups


class Peer:
    """One optimum-intel worker process (optimum_intel_worker.py), the model loaded."""

    def __init__(self, python: str, checkpoint: Path, mode: str, calibration: Path) -> None:
        command = [python, str(HERE / "optimum_intel_worker.py"), "--checkpoint", str(checkpoint), "--mode", mode]
        command += ["--calibration", str(calibration)]
        print(f"optimum-intel {mode}: loading (export{', calibration' if mode == 'w8a8' else ''})", flush=True)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        if self._answer().get("ready") is not True:
            raise SystemExit(f"optimum-intel {mode} did not start")

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"optimum-intel's worker exited ({self.process.wait()})")
        return json.loads(line)

    def score(self, texts: list[str], batch: int) -> tuple[float, list[float]]:
        """(sequences/s, rewards) of `texts`, `batch` a call."""
        self.process.stdin.write(json.dumps({"texts": texts, "batch": batch}) + "\n")
        answer = self._answer()
        return len(texts) / answer["seconds"], answer["rewards"]

    def resident(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS"))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@contextlib.contextmanager
def peer(python: str, checkpoint: Path, mode: str, calibration: Path) -> Iterator[Peer]:
    worker = Peer(python, checkpoint, mode, calibration)
    try:
        yield worker
    finally:
        worker.close()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimum-python", required=True, help="python of a virtual environment with optimum-intel")
    parser.add_argument("--bundle", type=Path, default=Path("models/real-size/qwen3-0.6b/bundle-auto"))
    parser.add_argument("--checkpoint", type=Path, default=Path("models/real-size/qwen3-0.6b/checkpoint"))
    parser.add_argument("--modes", nargs="+", default=["bf16", "int8-weights", "w8a8"], help="optimum-intel's")
    parser.add_argument("--sequences", type=int, default=96, help="distinct HH pairs per load shape")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["300x8"], help="GRPO groups' PxG")
    parser.add_argument("--groups", type=int, default=3, help="GRPO groups per setting")
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/vllm_figures.py reads it)")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    reference = BundleRuntime(args.bundle, precision="fp32")
    fmt = reference.manifest.input_format
    items = hh_items(reference.encoder, max_tokens=fmt.max_length)
    needed = WARM_UP + CALIBRATION + len(SHAPES) * args.sequences
    if len(items) < needed:
        raise SystemExit(f"only {len(items)} HH items fit {fmt.max_length} tokens, {needed} needed")
    warm_up, calibration = items[:WARM_UP], items[WARM_UP : WARM_UP + CALIBRATION]
    measured = items[WARM_UP + CALIBRATION : needed]
    texts = held_out_texts()
    settings = [tuple(int(n) for n in s.split("x")) for s in args.settings]
    groups = {(p, g): make_groups(reference, p, g, args.groups, texts) for p, g in settings}
    print(f"{reference.machine.describe()}, {available_cpus()} CPUs; {args.bundle}")

    with (
        tempfile.TemporaryDirectory() as scratch,
        rewardserve_process(args.bundle, {"REWARDSERVE_CACHE_SIZE": "0"}) as server,
    ):
        said = [line for line in server.log_text().splitlines() if "engine: " in line]
        print("rewardserve: " + " | ".join(line.split('"message": "')[-1][:120] for line in said))
        calibration_file = Path(scratch) / "calibration.json"
        calibration_file.write_text(json.dumps(pair_texts(reference, calibration)))
        run_load(server.url, warm_up, 64, 8, "rewardserve warm-up")
        rates: dict[tuple[str, str], list[float]] = {}
        memory: dict[str, int] = {}
        for mode in args.modes:
            with peer(args.optimum_python, args.checkpoint, mode, calibration_file) as worker:
                name = f"optimum-intel {mode}"
                check(worker, reference, warm_up, name)
                measure_distinct(args, server.url, reference, worker, name, measured, rates)
                for (p, g), setting_groups in groups.items():
                    measure_groups(server.url, reference, worker, name, p, g, setting_groups, rates)
                memory[name] = worker.resident()
        memory["rewardserve"] = server.memory()[0]
    report(args, rates, memory)


def pair_texts(reference: BundleRuntime, items: list[dict]) -> list[str]:
    """HH pairs as the bundle's chat template renders their conversations (what vLLM gets too)."""
    fmt = reference.manifest.input_format
    turns = [sum(as_turns(i["prompt"], i["response"]), start=[]) for i in items]
    return [render(fmt.chat_template, t, False, fmt.template_variables) for t in turns]


def check(worker: Peer, reference: BundleRuntime, warm_up: list[dict], name: str) -> None:
    """The peer's rewards on the warm-up pairs against rewardserve fp32 in-process (and its warm-up)."""
    _, rewards = worker.score(pair_texts(reference, warm_up), 8)
    encoded = reference.encoder.encode([i["prompt"] for i in warm_up], [i["response"] for i in warm_up])
    gap = np.abs(np.array(rewards) - score_sequences(reference, encoded).rewards).max()
    print(f"{name} against rewardserve fp32 in-process, {len(warm_up)} pairs: max |reward diff| {gap:.3g}", flush=True)


def measure_distinct(
    args: argparse.Namespace, url: str, reference: BundleRuntime, worker: Peer, name: str, measured: list, rates: dict
) -> None:
    """Both engines on each round's own distinct pairs, per shape; rewardserve first, then the peer."""
    slices = np.array_split(np.arange(args.sequences), args.rounds)
    for number, indices in enumerate(slices, 1):
        for shape_number, (shape, (clients, per_request)) in enumerate(SHAPES.items()):
            chunk = [measured[shape_number * args.sequences + i] for i in indices]
            result = run_load(url, chunk, clients, per_request, f"round {number}: rewardserve {shape}")
            if result.errors:
                raise SystemExit(f"rewardserve: {result.errors} failed requests")
            rates.setdefault((f"rewardserve vs {name}", shape), []).append(result.sequences_per_second)
            rate, _ = worker.score(pair_texts(reference, chunk), per_request)
            print(f"round {number}: {name} {shape}: {rate:.2f} seq/s", flush=True)
            rates.setdefault((name, shape), []).append(rate)


def measure_groups(
    url: str, reference: BundleRuntime, worker: Peer, name: str, p: int, g: int, groups: list, rates: dict
) -> None:
    """Each group alone: one /compare to rewardserve, one call of G to the peer."""
    load = f"GRPO P={p} G={g}"
    rates[(f"rewardserve vs {name}", load)] = group_rates(url, reference, groups, "compare", "rewardserve", load)
    for group in groups:
        texts = [rendered(reference, {"prompt": group["prompt"], "response": r}) for r in group["responses"]]
        rate, _ = worker.score(texts, len(texts))
        rates.setdefault((name, load), []).append(rate)
    print(f"{name} {load}: {rates[(name, load)]} seq/s", flush=True)


def report(args: argparse.Namespace, rates: dict[tuple[str, str], list[float]], memory: dict[str, int]) -> None:
    """Rates, the ratios beside their targets, and memory (and the JSON vllm_figures.py reads)."""
    loads = [*SHAPES, *(f"GRPO P={s.replace('x', ' G=')}" for s in args.settings)]
    print("\nsequences/s, medians (rounds or groups in brackets); ratio: rewardserve / optimum-intel, median of "
          "the rounds' ratios")  # fmt: skip
    ratios: dict[str, dict[str, float]] = {}
    for mode in args.modes:
        name = f"optimum-intel {mode}"
        for load in loads:
            ours, theirs = rates[(f"rewardserve vs {name}", load)], rates[(name, load)]
            ratio = float(np.median(np.array(ours) / np.array(theirs)))
            ratios.setdefault(name, {})[load] = ratio
            target = TARGET_REUSE if load.startswith("GRPO") else TARGET_SERVING
            print(f"  {load:<18} rewardserve {statistics.median(ours):6.2f} ({', '.join(f'{r:.2f}' for r in ours)})"
                  f"  {name:<28}{statistics.median(theirs):6.2f} ({', '.join(f'{r:.2f}' for r in theirs)})"
                  f"  {ratio:5.2f}x  target >= {target:.1f}x {'met' if ratio >= target else 'NOT met'}")  # fmt: skip
    print("\nresident memory after the loads: " + ", ".join(f"{n} {b / 2**20:,.0f} MiB" for n, b in memory.items()))
    sys.stdout.flush()
    if args.json:
        flat = {f"{name} | {load}": values for (name, load), values in rates.items()}
        args.json.write_text(json.dumps({"ratios": ratios, "rates": flat, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
