"""Decoder reward models at real size, engine by engine: transformers + torch (sdpa, fp32 and
bf16) against rewardserve's graphs written from the weights (export/decoder_graph.py), run as
the server runs them: onnxruntime fp32 (fused attention), OpenVINO bf16 (the portable graph),
onnxruntime dynamic int8, and weight-only int8/int4 (MatMulNBits).

    python benchmarks/decoder_engines.py --shape qwen3-0.6b        # ~15 min on 2 cores
    python benchmarks/decoder_engines.py --shape llama-3.2-1b --sequences 32

The model is real_size_export.py's: the named model's dimensions, random weights (fine for speed;
they cannot judge agreement, which the export gate measures on a trained model). The inputs are
held-out HH conversations rendered with its chat template at their natural lengths (up to
--max-length), the same sequences for every engine, in length-sorted batches of at most 4096
padded tokens, as export and `rewardserve score` batch them. Engines take turns within each
round; figures are medians over rounds.

What limits each engine: the FLOPs each sequence costs (2 per parameter per token outside the
embedding, plus attention's two n x n products per layer), against this machine's measured GEMM
peak (a 2048^3 matmul in torch, fp32 and bf16).
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
from real_size_export import SHAPES, build
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.bundle.batches import token_batches
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.engine_choice import Machine
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import load_preferences
from rewardserve.export import decoder_graph
from rewardserve.export.gaps import example_inputs
from rewardserve.export.precision import quantize_int8, quantize_weights
from rewardserve.export.source import load_source

Engine = Callable[[Sequence[EncodedSequence]], np.ndarray]


def gemm_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a size^3 matmul in torch on this machine: what a perfect engine would reach."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def heldout_sequences(encoder: SequenceEncoder, count: int) -> list[EncodedSequence]:
    """`count` held-out HH conversations (a seeded sample, the first response of each) as the
    model reads them, shortest first."""
    heldout, _ = load_preferences(default_data_files(), split="heldout")
    order = np.random.default_rng(0).permutation(len(heldout))[:count]
    inputs = [example_inputs(encoder.format, [heldout[i]])[0] for i in order]
    return sorted(encoder.encode(*zip(*inputs, strict=True)), key=len)


def linear_flops_per_token(config) -> float:
    """FLOPs of the linear layers (the matrix products with weights) for one token: 2 per weight."""
    hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * config.intermediate_size
    return 2 * per_layer * config.num_hidden_layers


def sequence_flops(config, length: int) -> float:
    """Forward FLOPs of one sequence: linear layers (2 per weight per token) and attention's
    scores and weighted sum (2 x 2 x n^2 x head_dim per head per layer, as computed: unmasked)."""
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return linear_flops_per_token(config) * length + 4 * layers * heads * head_dim * length**2


def engines(checkpoint: Path, work: Path, encoder: SequenceEncoder) -> dict[str, Engine]:
    source = load_source(checkpoint, max_length=encoder.format.max_length)
    built = decoder_graph.build(source.model, source.input_format, work)
    torch_fp32 = source.reward
    bf16 = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.bfloat16).eval()
    names = encoder.format.input_names

    def run_torch(model: Callable) -> Engine:
        def run(batch: Sequence[EncodedSequence]) -> np.ndarray:
            arrays = encoder.pad(batch).arrays
            with torch.inference_mode():
                return model(*(torch.from_numpy(arrays[n]) for n in names)).float().numpy()

        return run

    def last_token_bf16(input_ids, attention_mask, *_):
        hidden = bf16.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(1) - 1  # right padding
        return bf16.score(hidden[torch.arange(len(last)), last])[:, 0]

    graphs = {"rewardserve fp32 (onnxruntime, fused)": (built.graph, "fp32")}
    if Machine.this().cannot_run("bf16") is None:
        graphs["rewardserve bf16 (openvino)"] = (built.portable, "bf16")
    for name, bits, int8_activations, kind in (
        ("rewardserve int8 dynamic", None, True, "int8"),
        ("rewardserve int8 weights, fp32 activations", 8, False, "int8"),
        ("rewardserve int4 weights, fp32 activations", 4, False, "int8"),
        ("rewardserve int4 weights, int8 activations", 4, True, "int8"),
    ):
        out = work / f"{name.split()[1]}-{bits}-{int8_activations}" / "model.onnx"
        out.parent.mkdir()
        print(f"quantising: {name}", flush=True)
        quantize_int8(built.graph, out) if bits is None else quantize_weights(built.graph, out, bits, int8_activations)
        graphs[name] = (out, kind)
    result: dict[str, Engine] = {
        "torch fp32 (sdpa)": run_torch(torch_fp32),
        "torch bf16 (sdpa)": run_torch(last_token_bf16),
    }
    for name, (graph, precision) in graphs.items():
        runner = GraphRunner(graph, encoder, precision=precision)
        result[name] = lambda batch, r=runner: r.score(encoder.pad(batch)).rewards
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--work", type=Path, default=Path("models/real-size"))
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(available_cpus())
    checkpoint = build(args.shape, args.work / args.shape / "checkpoint")
    source = load_source(checkpoint, max_length=args.max_length)
    encoder = SequenceEncoder(source.tokenizer, source.input_format)
    config = source.model.config
    sequences = heldout_sequences(encoder, args.sequences)
    del source
    lengths = [len(s) for s in sequences]
    batches = [sequences[rows] for rows in token_batches(lengths, max_rows=32)]
    flops = sum(sequence_flops(config, n) for n in lengths)
    print(f"{Machine.this().describe()}, {available_cpus()} CPUs")
    print(
        f"{args.shape}: {len(sequences)} conversations, {np.mean(lengths):.0f} tokens on average (max {max(lengths)})"
    )
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    print(f"GEMM peak (torch 2048^3): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")

    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        candidates = engines(checkpoint, Path(work), encoder)
        for engine in candidates.values():  # warm-up: first-call allocations stay out of the figures
            engine(batches[0])
        for _ in tqdm(range(args.rounds), desc="rounds"):
            for name, engine in candidates.items():
                start = time.perf_counter()
                for batch in tqdm(batches, desc=name, leave=False):
                    engine(batch)
                seconds.setdefault(name, []).append(time.perf_counter() - start)

    tokens = sum(lengths)
    torch_fp32, torch_bf16 = (statistics.median(seconds[n]) for n in ("torch fp32 (sdpa)", "torch bf16 (sdpa)"))
    print(f"\nmedian of {args.rounds} rounds; GFLOP/s counts what each sequence costs, padding aside")
    print(
        f"{'engine':<46}{'tokens/s':>9}{'seq/s':>7}{'vs torch fp32':>15}{'vs torch bf16':>15}"
        f"{'GFLOP/s':>9}{'of peak':>9}"
    )
    for name, times in seconds.items():
        median = statistics.median(times)
        # int8 kernels have a peak of their own, not measured here
        peak = None if "int" in name else peaks["bf16" if "bf16" in name else "fp32"]
        print(
            f"{name:<46}{tokens / median:>9.0f}{len(sequences) / median:>7.2f}{torch_fp32 / median:>14.2f}x"
            f"{torch_bf16 / median:>14.2f}x{flops / median / 1e9:>9.0f}"
            + (f"{flops / median / peak:>9.0%}" if peak else f"{'-':>9}")
        )


if __name__ == "__main__":
    main()
