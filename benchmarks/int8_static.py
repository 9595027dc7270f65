"""Static int8 (W8A8, NNCF post-training quantization with SmoothQuant) against bf16, on a decoder
bundle's OpenVINO graph: what AMX int8 gains on this machine before it is built into export.

    pip install nncf      # not a dependency yet: export will need it once it writes int8 W8A8
    python benchmarks/int8_static.py --bundle models/real-size/qwen3-0.6b/judge-bf16     # ~10 min on 2 cores

Reads the bundle's bf16 IR (fp16 weights), calibrates NNCF's `quantize` (model type
TRANSFORMER: SmoothQuant on the matrix products) on `--calibration` HH conversations encoded as
the bundle encodes them, then runs the same `--sequences` other conversations, length-sorted in
batches of `--batch`, through both compiled models (inference precision bf16: the int8 graph's
quantized products run in int8, the rest in bf16), the two taking turns for `--rounds`. Prints
seq/s, their ratio, the largest reward difference from the bf16 graph's, and a large matrix
product's rate at int8 and at bf16 beside them (what this machine's AMX units give at best).
Random weights are fine for speed; the agreement gate on a trained decoder decides shipping.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rewardserve.bundle import SequenceEncoder, load_bundle
from rewardserve.bundle.judge import TooLongToJudge
from rewardserve.data.hh import default_data_files, prompt_turns
from rewardserve.data.preferences import load_preferences

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


def batches(encoder: SequenceEncoder, sequences: list, size: int, model) -> list[dict[str, np.ndarray]]:
    """Length-sorted padded batches, as the graph reads whole sequences: a prefix graph (the
    bundle's bf16 IR is one) with an empty past of each layer and no prompt before them."""
    ordered = sorted(sequences, key=len)
    padded = [encoder.pad(ordered[i : i + size]).arrays for i in range(0, len(ordered), size)]
    inputs = {name: port for port in model.inputs for name in port.get_names()}
    work = []
    for arrays in padded:
        rows = len(arrays["input_ids"])
        batch = {name: array for name, array in arrays.items() if name in inputs}
        for name, port in inputs.items():
            if name.startswith("past."):
                shape = port.get_partial_shape()
                batch[name] = np.zeros((rows, shape[1].get_length(), 0, shape[3].get_length()), np.float32)
            elif name == "prefix_lengths":
                batch[name] = np.zeros(rows, np.int64)
        work.append(batch)
    return work


def quantized(model, encoder: SequenceEncoder, calibration: list):
    import nncf

    samples = batches(encoder, calibration, 1, model)
    return nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))


def rate(compiled, work: list[dict[str, np.ndarray]], output: str) -> tuple[float, np.ndarray]:
    """Sequences per second over `work`, and the rewards."""
    started = time.perf_counter()
    rewards = [compiled(batch)[output] for batch in work]
    seconds = time.perf_counter() - started
    rows = np.concatenate([np.asarray(r).reshape(len(r), -1) for r in rewards])
    return len(rows) / seconds, rows


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
    encoder = SequenceEncoder.from_file(args.bundle / manifest.tokenizer_file, manifest.input_format)
    sequences = conversations(encoder, args.calibration + args.sequences, args.max_tokens)
    calibration, measured = sequences[: args.calibration], sequences[args.calibration :]
    core = ov.Core()
    model = core.read_model(str(args.bundle / manifest.graph_file("bf16")))
    started = time.perf_counter()
    int8_model = quantized(model, encoder, calibration)
    print(f"NNCF quantize on {args.calibration} conversations: {time.perf_counter() - started:.0f} s")
    compiled = {
        "bf16": core.compile_model(model, "CPU", BF16),
        "int8 (W8A8)": core.compile_model(int8_model, "CPU", BF16),
    }
    work = batches(encoder, measured, args.batch, model)
    output = model.outputs[0].get_any_name()  # the reward, or a judge's verdict logits
    rates: dict[str, list[float]] = {name: [] for name in compiled}
    rewards: dict[str, np.ndarray] = {}
    for graph in compiled.values():  # warm-up
        rate(graph, work[:2], output)
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for name, graph in compiled.items():
            seq_s, rewards[name] = rate(graph, work, output)
            rates[name].append(seq_s)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\n{len(measured)} conversations, batches of {args.batch}, medians of {args.rounds} rounds")
    print(f"| graph | seq/s | vs bf16 | max abs {output} diff from bf16 |\n| --- | --- | --- | --- |")
    for name, value in medians.items():
        diff = float(np.abs(rewards[name] - rewards["bf16"]).max())
        print(f"| {name} | {value:.2f} | {value / medians['bf16']:.2f}x | {diff:.4f} |")
    products = matmul_rates(core)
    print(
        f"\nA 2048^3 matrix product: bf16 {products['bf16']:.2f} TOPS, int8 {products['int8']:.2f} TOPS "
        f"({products['int8'] / products['bf16']:.2f}x)"
    )


if __name__ == "__main__":
    main()
