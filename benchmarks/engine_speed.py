"""Engine candidates, side by side: transformers + torch (fp32, bf16 weights) against the
exported graph run by onnxruntime's CPU provider (fp32, dynamic int8, static QDQ int8) and by
OpenVINO (fp32, bf16 inference precision, static QDQ int8), on the same real HH sequences in the
same batches. What engine_choice.py's order rests on.

    python benchmarks/engine_speed.py                      # the default checkpoint, CPU
    python benchmarks/engine_speed.py --checkpoint DIR --rounds 5

Speed: two input sets, held-out HH pairs at their natural lengths (up to the checkpoint's max
length) and pairs cut to exactly 128 tokens, scored in length-sorted batches of --batch-size,
as the server batches them. Engines take turns within each round, so machine noise hits all of
them alike; the figures are the medians over rounds, and each ratio is against torch fp32.
Agreement: each engine's decisions on --gate-pairs held-out pairs against onnxruntime fp32 and
its accuracy, the export gate's two figures (static int8 is calibrated on other held-out pairs).
The graphs are built with the exporter's own steps.
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
from rewardserve.bundle.engine_choice import Machine
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import PreferenceExample, load_preferences
from rewardserve.export import graph as graphs
from rewardserve.export.parity import torch_rewards
from rewardserve.export.precision import agreement, quantize_int8
from rewardserve.export.source import ExportSource, load_source

DEFAULT_CHECKPOINT = Path("models/default/checkpoint")


def batches(sequences: Sequence[EncodedSequence], size: int) -> list[list[EncodedSequence]]:
    ordered = sorted(sequences, key=len)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def quantize_static_qdq(traced: Path, out: Path, encoder: SequenceEncoder, calibration: list[tuple[str, str]]) -> None:
    """Static int8 in QDQ form: weights per channel, activations with ranges calibrated (min-max)
    on real sequences, so both engines can run int8 matmuls (VNNI, AMX int8) end to end."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    sequences = encoder.encode(*zip(*calibration, strict=True))
    feeds = iter([encoder.pad(sequences[i : i + 16]).arrays for i in range(0, len(sequences), 16)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(feeds, None)

    quantize_static(
        traced,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def openvino(graph: Path, encoder: SequenceEncoder, inference_precision: str) -> Callable:
    session = OpenVinoSession(graph, available_cpus(), inference_precision)
    return lambda batch: session.run(["reward"], encoder.pad(batch).arrays)[0].reshape(-1)


def build_engines(
    checkpoint: Path, work: Path, calibration: list[tuple[str, str]]
) -> tuple[ExportSource, dict[str, Callable]]:
    """name -> function scoring one padded batch of EncodedSequences."""
    export = load_source(checkpoint)  # tracing switches to eager attention, what the fusions match
    torch_source = load_source(checkpoint)  # transformers' default attention, as users run it
    bf16_source = load_source(checkpoint)
    bf16_source.reward.to(torch.bfloat16)
    encoder = SequenceEncoder(export.tokenizer, export.input_format)
    sample = encoder.pad(encoder.encode(["a prompt"] * 2, ["a response", "a longer response"])).arrays
    traced, fused, int8, qdq = work / "traced.onnx", work / "fused.onnx", work / "int8.onnx", work / "qdq.onnx"
    graphs.trace(export, sample, traced)
    info = graphs.optimize(export, traced, fused)
    quantize_int8(fused, int8)
    quantize_static_qdq(traced, qdq, encoder, calibration)
    print(f"fused operators: {info.fused_operators}")
    runners = {
        "ort fp32": GraphRunner(fused, encoder),
        "ort dynamic int8": GraphRunner(int8, encoder, precision="int8"),
        "ort static int8": GraphRunner(qdq, encoder, precision="int8"),
    }
    engines = {
        "torch fp32": lambda batch: torch_rewards(torch_source, encoder, batch),
        "torch bf16": lambda batch: torch_rewards(bf16_source, encoder, batch),
    }
    engines |= {name: (lambda batch, r=runner: r.score(encoder.pad(batch)).rewards) for name, runner in runners.items()}
    engines["openvino fp32"] = openvino(fused, encoder, "f32")
    engines["openvino static int8"] = openvino(qdq, encoder, "f32")
    if Machine.this().cannot_run("bf16") is None:
        engines["openvino bf16"] = openvino(fused, encoder, "bf16")
    else:
        print(f"openvino bf16 left out: {Machine.this().cannot_run('bf16')}")
    return export, engines


def gate_figures(
    engines: dict[str, Callable], encoder: SequenceEncoder, examples: list[PreferenceExample], size: int
) -> dict:
    """Each engine's agreement with onnxruntime fp32 on the pairs of `examples`."""
    pairs = [(e.prompt, r) for e in examples for r in e.responses[:2]]
    sequences = encoder.encode(*zip(*pairs, strict=True))
    order = np.argsort([len(s) for s in sequences], kind="stable")
    gaps = {}
    for name, engine in tqdm(engines.items(), desc="agreement"):
        rewards = np.empty(len(sequences))
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            rewards[chunk] = engine([sequences[i] for i in chunk])
        gaps[name] = rewards[0::2] - rewards[1::2]
    return {name: agreement(gaps["ort fp32"], g) for name, g in gaps.items()}


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
    parser.add_argument("--gate-pairs", type=int, default=600, help="held-out pairs the agreement is measured on")
    args = parser.parse_args()

    torch.set_num_threads(available_cpus())  # the same cores ONNX Runtime uses
    print(f"{Machine.this().describe()}, {available_cpus()} CPUs")
    heldout, _ = load_preferences(default_data_files(), split="heldout")
    gated, calibration = heldout[: args.gate_pairs], heldout[args.gate_pairs : args.gate_pairs + 64]
    with tempfile.TemporaryDirectory() as tmp:
        calibration_pairs = [(e.prompt, r) for e in calibration for r in e.responses]
        source, engines = build_engines(args.checkpoint, Path(tmp), calibration_pairs)
        encoder = SequenceEncoder(source.tokenizer, source.input_format)
        gates = gate_figures(engines, encoder, gated, args.batch_size)
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
    print(f"{'inputs':<28}{'engine':<22}{'seq/s':>8}{'vs torch':>10}{'vs ort fp32':>13}")
    for name in sets:
        baseline = statistics.median(rates[(name, "torch fp32")])
        ort = statistics.median(rates[(name, "ort fp32")])
        for engine_name in engines:
            rate = statistics.median(rates[(name, engine_name)])
            print(f"{name:<28}{engine_name:<22}{rate:>8.1f}{rate / baseline:>9.2f}x{rate / ort:>12.2f}x")
    pairs = next(iter(gates.values())).pairs
    print(
        f"\nagreement with ort fp32 on {pairs} held-out pairs (the gate: >= 99% decisions, accuracy drop <= 0.5 points)"
    )
    print(f"{'engine':<22}{'decisions':>10}{'accuracy':>10}")
    for engine_name, gate in gates.items():
        print(f"{engine_name:<22}{gate.decisions_matching:>10.2%}{gate.accuracy:>10.4f}")


if __name__ == "__main__":
    main()
