"""The w8a8 engine's matrix products against this machine's int8 peak, beside the bf16 engine's
against its bf16 peak: OpenVINO's CPU plugin running a decoder bundle's w8a8 and bf16 graphs as
the server runs them, on held-out HH conversations (random weights are fine: speed does not
depend on them).

    python benchmarks/int8_engine.py --bundle models/real-size/qwen3-0.6b/bundle-auto \\
        --checkpoint models/real-size/qwen3-0.6b/checkpoint          # ~6 min on 2 cores

Prints:
- the peaks: a 4096^3 MatMul compiled by OpenVINO at int8 (the pattern NNCF writes: activations
  through a FakeQuantize, int8 weights with a scale per output channel) and at bf16, timed by
  OpenVINO's counter on the product's node, and the kernel each ran;
- for each graph, over the same batches (each of one 16-token length bucket, up to 2,048 padded
  tokens, as the server forms them): tokens/s of the calls; from OpenVINO's per-node counters, the
  share of the time in the linear layers' products (its FullyConnected nodes); their rate (2
  operations per weight per padded token) as a share of the same precision's peak, measured just
  before and just after each pass (this VM's speed drifts), the median of the passes' ratios;
- where the rest of the time goes: the kernels by time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from bf16_engine import profile
from decoder_engines import heldout_sequences, linear_flops_per_token
from transformers import AutoConfig

from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.batches import token_batches
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.manifest import load_bundle
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.past import empty_past
from rewardserve.bundle.runtime import OPENVINO_LENGTH_BUCKET

PEAK_SIZE = 4096
PRODUCTS = "FullyConnected"  # OpenVINO's node for a product with a weight matrix
BATCH_TOKENS = 2048


class MatMulPeak:
    """One size^3 MatMul compiled by OpenVINO at `precision` (int8 or bf16), prepared once, so that
    it can be measured between engine passes."""

    def __init__(self, precision: str, size: int = PEAK_SIZE) -> None:
        import openvino as ov

        ops, rng = ov.opset13, np.random.default_rng(0)
        x = ops.parameter([size, size], ov.Type.f32, name="x")
        if precision == "int8":
            low, high = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
            activations = ops.fake_quantize(x, low, high, low, high, 256)
            weight = ops.constant(rng.integers(-127, 128, (size, size), dtype=np.int8))
            scale = ops.constant(np.full((size, 1), 0.01, np.float32))
            product = ops.matmul(activations, ops.multiply(ops.convert(weight, ov.Type.f32), scale), False, True)
        else:
            product = ops.matmul(x, ops.constant(rng.standard_normal((size, size), np.float32)), False, False)
        config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": available_cpus(), "PERF_COUNT": True}
        self._request = ov.Core().compile_model(ov.Model([product], [x]), "CPU", config).create_infer_request()
        self._feed = np.random.default_rng(1).uniform(-4, 4, (size, size)).astype(np.float32)
        self.size = size

    def measure(self, repeats: int = 3) -> float:
        """Operations per second of the product's own kernel, the median of `repeats` calls: as the
        engine's products are timed (OpenVINO's per-node counters), so that converting the f32
        input to the kernel's precision counts in neither."""
        self._request.infer({"x": self._feed})
        seconds = []
        for _ in range(repeats):
            self._request.infer({"x": self._feed})
            seconds.append(sum(i.real_time.total_seconds() for i in self._products()))
        return 2 * self.size**3 / statistics.median(seconds)

    def _products(self) -> list:
        return [i for i in self._request.profiling_info if i.node_type in ("FullyConnected", "MatMul")]

    def kernel(self) -> str:
        """The kernel that ran the product (OpenVINO's exec type)."""
        return ", ".join(f"{i.node_type} ({i.exec_type})" for i in self._products())


def profiled_pass(session: OpenVinoSession, feeds: list[dict[str, np.ndarray]]) -> tuple[float, dict[str, float]]:
    """Seconds of one pass over `feeds`, and the microseconds OpenVINO spent by kernel."""
    by_kernel: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    for feed in feeds:
        for kernel, micros in profile(session, feed).items():
            by_kernel[kernel] += micros
    return time.perf_counter() - started, by_kernel


def engine_figures(graph: Path, encoder, sequences, config, peak: MatMulPeak, repeats: int) -> dict:
    """One graph's rate, and its products' rate against `peak` measured beside each pass."""
    session = OpenVinoSession(graph, available_cpus(), "bf16", perf_count=True)
    past = empty_past(session)
    lengths = [len(s) for s in sequences]
    batches = [sequences[r] for r in token_batches(lengths, 32, BATCH_TOKENS, OPENVINO_LENGTH_BUCKET)]
    padded = [encoder.pad(batch, OPENVINO_LENGTH_BUCKET).arrays for batch in batches]
    feeds = [past(p) if past else p for p in padded]
    padded_tokens = sum(p["input_ids"].size for p in padded)
    profiled_pass(session, feeds)  # warm-up: OpenVINO compiles each shape once
    passes = []
    for _ in range(repeats):
        before = peak.measure()
        seconds, by_kernel = profiled_pass(session, feeds)
        around = (before + peak.measure()) / 2
        products = sum(us for kernel, us in by_kernel.items() if kernel.startswith(PRODUCTS)) / 1e6
        rate = linear_flops_per_token(config) * padded_tokens / products
        passes.append({"seconds": seconds, "products": products, "rate": rate, "share": rate / around,
                       "kernels": by_kernel, "peak": around})  # fmt: skip
    middle = sorted(passes, key=lambda p: p["share"])[len(passes) // 2]
    return {
        "tokens_per_second": sum(lengths) / statistics.median(p["seconds"] for p in passes),
        "products_of_time": middle["products"] / (sum(middle["kernels"].values()) / 1e6),
        "products_rate": middle["rate"],
        "share_of_peak": middle["share"],
        "shares": [p["share"] for p in passes],
        "peak": middle["peak"],
        "kernels": dict(sorted(middle["kernels"].items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/real-size/qwen3-0.6b/bundle-auto"))
    parser.add_argument("--checkpoint", type=Path, default=Path("models/real-size/qwen3-0.6b/checkpoint"))
    parser.add_argument("--sequences", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/vllm_figures.py reads it)")
    args = parser.parse_args()

    manifest = load_bundle(args.bundle)
    encoder = BundleRuntime(args.bundle, precision="fp32").encoder
    config = AutoConfig.from_pretrained(args.checkpoint)
    sequences = heldout_sequences(encoder, args.sequences)
    print(f"{manifest.name}: {len(sequences)} held-out conversations, {np.mean([len(s) for s in sequences]):.0f} "
          f"tokens on average; {available_cpus()} CPUs")  # fmt: skip
    peaks = {"w8a8": MatMulPeak("int8"), "bf16": MatMulPeak("bf16")}
    for name, peak in peaks.items():
        print(f"{'int8' if name == 'w8a8' else name} peak, {PEAK_SIZE}^3 MatMul in OpenVINO: "
              f"{peak.measure(5) / 1e9:.0f} G op/s ({peak.kernel()})")  # fmt: skip
    figures = {}
    print(f"\n{'graph':<18}{'tokens/s':>10}{'products':>10}{'their rate':>14}{'of peak':>9}{'peak around':>13}")
    for precision, peak in peaks.items():
        graph = args.bundle / manifest.variants[precision].file
        figures[precision] = f = engine_figures(graph, encoder, sequences, config, peak, args.repeats)
        print(f"{graph.name:<18}{f['tokens_per_second']:>10.0f}{f['products_of_time']:>10.0%}"
              f"{f['products_rate'] / 1e9:>9.0f} G/s{f['share_of_peak']:>9.0%}{f['peak'] / 1e9:>9.0f} G/s"
              f"   (passes: {', '.join(f'{s:.0%}' for s in f['shares'])})")  # fmt: skip
    for precision, f in figures.items():
        total = sum(f["kernels"].values())
        print(f"\nwhere {precision}'s time goes (one pass, {total / 1e6:.1f} s in kernels):")
        for kernel, micros in list(f["kernels"].items())[:10]:
            print(f"  {kernel:<64}{micros / 1e6:>7.2f} s {micros / total:>6.1%}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
