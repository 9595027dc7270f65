"""The bf16 decoder engine against this machine's bf16 peak, profiled: OpenVINO's CPU plugin
running a real-size decoder's graph as a bundle ships it (the portable prefix graph in OpenVINO's
format, fp16 weights; random weights, real_size_export.py's shape) on held-out HH
conversations, as the server runs it (backbone at bf16, reward head at fp32).

    python benchmarks/bf16_engine.py --shape qwen3-0.6b            # ~6 min on 2 cores

Prints:
- the machine's bf16 peak: the median FLOP/s of a 4096^3 matmul, in torch (oneDNN) and in
  OpenVINO (one MatMul compiled at bf16), on every CPU the process may use;
- what torch's bf16 GEMM reaches on the model's own matrices (1,024 rows through the MLP's
  products): below the square peak, since a 1,024-wide hidden state gives AMX short inner loops;
- the engine at each batch shape: tokens/s, and FLOP/s as a share of the larger peak (measured
  again just before and after each pass, the share the median of the passes' ratios: this VM's
  speed drifts by 2x within minutes) and of that
  GEMM figure (the FLOPs each sequence costs: 2 per weight per token outside the embedding, plus
  attention's two n x n products per layer, padding aside);
- where the time goes: OpenVINO's per-node counters summed by the kernel that ran;
- resident memory after the session is built and has run once, against the fp32 weights: on
  the fp32-weight ONNX graph, and on the graph as a bundle ships it (OpenVINO's format, fp16
  weights).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from decoder_engines import gemm_peak, heldout_sequences, sequence_flops
from real_size_export import SHAPES, build

from rewardserve.bench.timing import median_seconds
from rewardserve.bundle import SequenceEncoder
from rewardserve.bundle.batches import token_batches
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.engine_choice import Machine
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.runtime import GraphRunner
from rewardserve.export import decoder_graph
from rewardserve.export.openvino_ir import write_bf16_graph
from rewardserve.export.source import load_source

PEAK_SIZE = 4096


def torch_gemm(m: int, k: int, n: int) -> float:
    a, b = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
    return 2 * m * k * n / median_seconds(lambda: a @ b, 5)


def model_shapes_peak(config, tokens: int = 1024) -> float:
    """What torch's bf16 GEMM reaches on the model's own matrices (a batch of `tokens` rows
    through the MLP's two products), FLOP-weighted: the attainable, below the square peak."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = [(tokens, hidden, 2 * inner), (tokens, inner, hidden)]
    seconds = sum(2 * m * k * n / torch_gemm(m, k, n) for m, k, n in shapes)
    return sum(2 * m * k * n for m, k, n in shapes) / seconds


class Peak:
    """This machine's bf16 peak now: a 4096^3 matmul in torch (oneDNN) and in OpenVINO (one MatMul
    compiled at bf16, prepared once), so that it can be measured between engine calls."""

    def __init__(self, size: int = PEAK_SIZE) -> None:
        import openvino as ov

        x = ov.opset13.parameter([size, size], ov.Type.f32, name="x")
        weight = ov.opset13.constant(np.random.default_rng(0).standard_normal((size, size), np.float32))
        model = ov.Model([ov.opset13.matmul(x, weight, False, False)], [x])
        config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": available_cpus()}
        self._request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
        self._feed = np.random.default_rng(1).standard_normal((size, size), np.float32)
        self.size = size

    def measure(self, repeats: int = 3) -> dict[str, float]:
        openvino = median_seconds(lambda: self._request.infer({"x": self._feed}), repeats)
        return {"torch": gemm_peak(torch.bfloat16, self.size, repeats), "openvino": 2 * self.size**3 / openvino}


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def held_after_first_call(graph: Path, encoder: SequenceEncoder, sequences: list) -> int:
    """Resident bytes a runner on `graph` adds once it has run (OpenVINO packs weights then)."""
    gc.collect()
    before = resident_bytes()
    runner = GraphRunner(graph, encoder, precision="bf16")
    runner.score(encoder.pad(sequences))
    held = resident_bytes() - before
    del runner
    gc.collect()
    return held


def profile(session: OpenVinoSession, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Microseconds by the kernel OpenVINO ran (its exec type), over one call."""
    session._backbone.infer({name: feeds[name] for name in session._backbone_inputs})
    by_kernel: dict[str, float] = defaultdict(float)
    for info in session._backbone.profiling_info:
        by_kernel[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds() * 1e6
    return by_kernel


def engine_shares(runner: GraphRunner, sequences, config, attainable: float, peak: Peak, repeats: int) -> dict:
    """The engine's FLOP/s at each batch shape, and its share of the peak measured beside it."""
    lengths = [len(s) for s in sequences]
    figures: dict = {"engine": {}, "share": {}}
    for max_tokens in (1024, 2048, 4096):
        batches = [sequences[rows] for rows in token_batches(lengths, 32, max_tokens)]
        padded = [runner.encoder.pad(batch) for batch in batches]
        run = lambda p=padded, r=runner: [r.score(x) for x in p]  # noqa: E731
        run()
        # This VM's speed drifts by up to 2x within minutes: each pass over the sequences is
        # read against the peak measured just before and just after it, and the share is the
        # median of those rounds' ratios.
        work = sum(sequence_flops(config, n) for n in lengths)
        seconds, shares, arounds = [], [], []
        for _ in range(repeats):
            before = max(peak.measure().values())
            started = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - started)
            arounds.append((before + max(peak.measure().values())) / 2)
            shares.append(work / seconds[-1] / arounds[-1])
        flops, share = work / statistics.median(seconds), statistics.median(shares)
        label = f"up to {max_tokens} tokens"
        print(f"{label:<30}{sum(lengths) / statistics.median(seconds):>10.0f}{flops / 1e9:>10.0f}{share:>9.0%}"
              f"{flops / attainable:>9.0%}{statistics.median(arounds) / 1e9:>9.0f} GF/s"
              f"   (rounds: {', '.join(f'{r:.0%}' for r in shares)})")  # fmt: skip
        figures["engine"][label], figures["share"][label] = flops, share
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--work", type=Path, default=Path("models/real-size"))
    parser.add_argument("--sequences", type=int, default=48)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/vllm_figures.py reads it)")
    args = parser.parse_args()

    torch.set_num_threads(available_cpus())
    print(f"{Machine.this().describe()}, {available_cpus()} CPUs")
    machine_peak = Peak()
    peaks = machine_peak.measure(5)  # at the start; again beside each engine pass below
    peak = max(peaks.values())
    print("bf16 peak, 4096^3 matmul: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))

    checkpoint = build(args.shape, args.work / args.shape / "checkpoint")
    weights = sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))
    source = load_source(checkpoint, max_length=args.max_length)
    encoder = SequenceEncoder(source.tokenizer, source.input_format)
    config = source.model.config
    attainable = model_shapes_peak(config)
    print(f"bf16 GEMM on the model's own matrices (1024 tokens through the MLP), torch: {attainable / 1e9:.0f} GFLOP/s")
    sequences = heldout_sequences(encoder, args.sequences)
    lengths = [len(s) for s in sequences]
    print(
        f"{args.shape}: {len(sequences)} conversations, {np.mean(lengths):.0f} tokens on average (max {max(lengths)})"
    )
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        built = decoder_graph.build(source.model, source.input_format, Path(work), prefix=True)
        del source
        gc.collect()
        # As a bundle ships it: the prefix graph in OpenVINO's format, fp16 weights (openvino_ir.py)
        graph = write_bf16_graph(built.portable_prefix, Path(work) / "model.bf16.xml")
        for name, path in (("fp32 weights (the ONNX graph)", built.portable_prefix), ("as shipped", graph)):
            held = held_after_first_call(path, encoder, sequences[:1])
            print(f"resident after load and a first call, {name}: +{held / 2**30:.2f} GiB for "
                  f"{weights / 2**30:.2f} GiB of fp32 weights ({held / weights:.2f}x)")  # fmt: skip
        runner = GraphRunner(graph, encoder, precision="bf16")
        print(f"\n{'batch (rows x padded tokens)':<30}{'tokens/s':>10}{'GFLOP/s':>10}{'of peak':>9}{'of GEMM':>9}"
              f"{'peak around':>13}")  # fmt: skip
        figures = {"peak": peak, "gemm_on_model_shapes": attainable}
        figures |= engine_shares(runner, sequences, config, attainable, machine_peak, args.repeats)
        middle = runner.empty_past(encoder.pad(sequences[len(sequences) // 2 : len(sequences) // 2 + 4]).arrays)
        del runner
        by_kernel = profile(OpenVinoSession(graph, available_cpus(), perf_count=True), middle)
        total = sum(by_kernel.values())
        print(f"\nwhere the time goes (4 rows of {middle['input_ids'].shape[1]} tokens, {total / 1e3:.0f} ms):")
        for kernel, micros in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {kernel:<60}{micros / 1e3:>8.1f} ms {micros / total:>6.1%}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
