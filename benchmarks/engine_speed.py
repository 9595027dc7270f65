"""Engine speed, side by side: transformers + torch eager against the exported ONNX graphs
(traced, fused fp32, int8) on the same real HH sequences in the same batches.

    python benchmarks/engine_speed.py                      # the default checkpoint, CPU
    python benchmarks/engine_speed.py --checkpoint DIR --rounds 5

Two input sets: held-out HH pairs at their natural lengths (up to the checkpoint's max length),
and pairs cut to exactly 128 tokens. Both are scored in length-sorted batches of --batch-size,
as the server batches them. Engines take turns within each round, so machine noise hits all
of them alike; the figures are the medians over rounds, and each ratio is against torch.
The graphs are built with the exporter's own steps (no agreement gate: this measures speed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.runtime import GraphRunner, providers_for
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import load_preferences
from rewardserve.export import graph as graphs
from rewardserve.export.onnx_export import torch_rewards
from rewardserve.export.precision import quantize_int8
from rewardserve.export.source import ExportSource, load_source

DEFAULT_CHECKPOINT = Path("models/default/checkpoint")


def batches(sequences: Sequence[EncodedSequence], size: int) -> list[list[EncodedSequence]]:
    ordered = sorted(sequences, key=len)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def build_engines(checkpoint: Path, work: Path) -> tuple[ExportSource, dict[str, Callable]]:
    """name -> function scoring one padded batch of EncodedSequences."""
    export = load_source(checkpoint)  # eager attention: what the fusions match
    torch_source = load_source(checkpoint, eager_attention=False)  # transformers' default, as users run it
    encoder = SequenceEncoder(export.tokenizer, export.input_format)
    sample = encoder.pad(encoder.encode(["a prompt"] * 2, ["a response", "a longer response"])).arrays
    traced, fused, int8 = work / "traced.onnx", work / "fused.onnx", work / "int8.onnx"
    graphs.trace(export, sample, traced)
    info = graphs.optimize(export, traced, fused)
    quantize_int8(fused, int8)
    print(f"fused operators: {info.fused_operators}")
    runners = {
        "onnx traced fp32": GraphRunner(traced, encoder, providers=providers_for("fp32")),
        "onnx fused fp32": GraphRunner(fused, encoder, providers=providers_for("fp32")),
        "onnx fused int8": GraphRunner(int8, encoder, providers=providers_for("int8")),
    }
    engines = {"torch eager fp32": lambda batch: torch_rewards(torch_source, encoder, batch)}
    engines |= {name: (lambda batch, r=runner: r.run(encoder.pad(batch))) for name, runner in runners.items()}
    return export, engines


def input_sets(source: ExportSource, count: int) -> dict[str, list[EncodedSequence]]:
    examples, _ = load_preferences(default_data_files(), split="heldout")
    pairs = [(e.prompt, r) for e in examples for r in e.responses]
    rng = np.random.default_rng(0)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    natural = SequenceEncoder(source.tokenizer, source.input_format).encode(*zip(*pairs[:count], strict=True))
    fixed_format = source.input_format.model_copy(update={"max_length": 128})
    at_128 = [
        s for s in SequenceEncoder(source.tokenizer, fixed_format).encode(*zip(*pairs, strict=True)) if len(s) == 128
    ]
    return {f"natural lengths (max {source.input_format.max_length})": natural, "128 tokens": at_128[:count]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--sequences", type=int, default=256, help="sequences per input set")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(available_cpus())  # the same cores ONNX Runtime uses
    with tempfile.TemporaryDirectory() as tmp:
        source, engines = build_engines(args.checkpoint, Path(tmp))
        sets = input_sets(source, args.sequences)
        rates: dict[tuple[str, str], list[float]] = {}
        for name, sequences in sets.items():
            work = batches(sequences, args.batch_size)
            tokens = sum(len(s) for s in sequences)
            print(f"{name}: {len(sequences)} sequences, {tokens / len(sequences):.0f} tokens on average")
            for engine in engines.values():  # warm-up: first-call allocations stay out of the figures
                engine(work[0])
            for _ in tqdm(range(args.rounds), desc=name):
                for engine_name, engine in engines.items():
                    start = time.perf_counter()
                    for batch in work:
                        engine(batch)
                    rates.setdefault((name, engine_name), []).append(len(sequences) / (time.perf_counter() - start))
    print(f"\nsequences/s, median of {args.rounds} rounds, batches of {args.batch_size}, {available_cpus()} CPUs")
    print(f"{'inputs':<28}{'engine':<20}{'seq/s':>8}{'vs torch':>10}")
    for name in sets:
        baseline = statistics.median(rates[(name, "torch eager fp32")])
        for engine_name in engines:
            rate = statistics.median(rates[(name, engine_name)])
            print(f"{name:<28}{engine_name:<20}{rate:>8.1f}{rate / baseline:>9.2f}x")


if __name__ == "__main__":
    main()
