"""w8a8 (int8 weights and calibrated int8 activations, as export writes it) against bf16, on a
decoder bundle's portable graph: what AMX int8 gains on this machine at real size.

    python benchmarks/int8_static.py --bundle models/real-size/qwen3-0.6b/judge-bf16     # ~10 min on 2 cores

Writes the bundle's portable graph as export writes each variant (export/openvino_ir.py): bf16
(fp16 weights) and w8a8 (NNCF calibrated on `--calibration` HH conversations encoded as the
bundle encodes them, SmoothQuant first, the reward head left out), then runs the same
`--sequences` other conversations, length-sorted in batches of `--batch`, through both in the
serving engine (bundle/openvino_session.py: the w8a8 graph's quantized products in int8, the
rest at bf16), the two taking turns for `--rounds`. Prints seq/s, their ratio, the largest
reward difference from the bf16 graph's, and a large matrix product's rate at int8 and at bf16
beside them (what this machine's AMX units give at best). Random weights are fine for speed; the
agreement gate on a trained decoder decides shipping.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rewardserve.bundle import SequenceEncoder, load_bundle
from rewardserve.bundle.judge import TooLongToJudge
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.data.hh import default_data_files, prompt_turns
from rewardserve.data.preferences import load_preferences
from rewardserve.export.openvino_ir import write_bf16_graph, write_w8a8_graph

BF16 = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=384)
    return parser.parse_args()


def conversations(encoder: SequenceEncoder, count: int, max_tokens: int) -> list:
    """`count` encoded HH conversations of at most `max_tokens` tokens, untruncated."""
    examples, _ = load_preferences(default_data_files(), split="all")
    pairs = sorted({(e.prompt, r) for e in examples for r in e.responses})
    random.Random(0).shuffle(pairs)
    chosen = []
    for prompt, response in pairs:
        try:
            (sequence,) = encoder.encode([prompt_turns(prompt)], [response])
        except TooLongToJudge:
            continue
        if not sequence.prompt_cut and len(sequence) <= max_tokens:
            chosen.append(sequence)
        if len(chosen) == count:
            return chosen
    raise SystemExit(f"only {len(chosen)} conversations fit")


def rate(runner: GraphRunner, work: list, encoder: SequenceEncoder) -> tuple[float, np.ndarray]:
    """Sequences per second over `work` (batches of encoded sequences), and the rewards."""
    started = time.perf_counter()
    rewards = [runner.score(encoder.pad(batch)).rewards for batch in work]
    return sum(map(len, work)) / (time.perf_counter() - started), np.concatenate(rewards)


def matmul_rates(core) -> dict[str, float]:
    """TOPS of a 2048 x 2048 x 2048 product at bf16, and at int8: its inputs fake-quantized as
    NNCF writes them (activations 256 levels, weights 255), which the CPU plugin runs in int8."""
    import openvino as ov
    from openvino import opset13 as ops

    n, runs = 2048, 10
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, n)).astype(np.float32)
    rates = {}
    for name in ("bf16", "int8"):
        param = ops.parameter([n, n], ov.Type.f32, name="x")
        x, w = param, ops.constant(rng.standard_normal((n, n)).astype(np.float32))
        if name == "int8":
            low, high = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
            x = ops.fake_quantize(x, low, high, low, high, 256)
            w = ops.fake_quantize(w, low, high, low, high, 255)
        compiled = core.compile_model(ov.Model([ops.matmul(x, w, False, False)], [param]), "CPU", BF16)
        compiled(data)
        started = time.perf_counter()
        for _ in range(runs):
            compiled(data)
        rates[name] = 2 * n**3 * runs / (time.perf_counter() - started) / 1e12
    return rates


def main() -> None:
    import openvino as ov

    args = arguments()
    manifest = load_bundle(args.bundle)
    if manifest.prefix is None or manifest.prefix.portable_file is None:
        raise SystemExit(f"{args.bundle} has no portable prefix graph: export a decoder built from its weights")
    encoder = SequenceEncoder.from_file(args.bundle / manifest.tokenizer_file, manifest.input_format)
    sequences = conversations(encoder, args.calibration + args.sequences, args.max_tokens)
    calibration, measured = sequences[: args.calibration], sequences[args.calibration :]
    portable = args.bundle / manifest.prefix.portable_file
    with tempfile.TemporaryDirectory() as work_dir:
        graphs = {"bf16": write_bf16_graph(portable, Path(work_dir) / "model.bf16.xml")}
        started = time.perf_counter()
        samples = [encoder.pad([s]).arrays for s in calibration]
        graphs["w8a8"] = write_w8a8_graph(portable, Path(work_dir) / "model.w8a8.xml", samples)
        print(f"w8a8 written, calibrated on {args.calibration} conversations: {time.perf_counter() - started:.0f} s")
        runners = {p: GraphRunner(g, encoder, outputs=manifest.outputs, precision=p) for p, g in graphs.items()}
    work = [sorted(measured, key=len)[i : i + args.batch] for i in range(0, len(measured), args.batch)]
    rates: dict[str, list[float]] = {name: [] for name in runners}
    rewards: dict[str, np.ndarray] = {}
    for runner in runners.values():  # warm-up
        rate(runner, work[:2], encoder)
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for name, runner in runners.items():
            seq_s, rewards[name] = rate(runner, work, encoder)
            rates[name].append(seq_s)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\n{len(measured)} conversations, batches of {args.batch}, medians of {args.rounds} rounds")
    print("| graph | seq/s | vs bf16 | max abs reward diff from bf16 |\n| --- | --- | --- | --- |")
    for name, value in medians.items():
        diff = float(np.abs(rewards[name] - rewards["bf16"]).max())
        print(f"| {name} | {value:.2f} | {value / medians['bf16']:.2f}x | {diff:.4f} |")
    products = matmul_rates(ov.Core())
    print(
        f"\nA 2048^3 matrix product: bf16 {products['bf16']:.2f} TOPS, int8 {products['int8']:.2f} TOPS "
        f"({products['int8'] / products['bf16']:.2f}x)"
    )


if __name__ == "__main__":
    main()
