"""w8a8 with attention's two products at bf16 (as export writes it) against the same graph with
them quantized too, on a decoder bundle, side by side in one run.

    python benchmarks/attention_precision.py --bundle models/real-size/qwen3-0.6b/bundle-auto-2048 \
        --keep models/real-size/qwen3-0.6b/bundle-attn-bf16                                        # ~12 min

Both graphs are written from the bundle's portable prefix graph by `write_w8a8_graph` (without
mixed precision: the same quantization either way), calibrated on the same 32 held-out HH
conversations, the second with `openvino_ir.ATTENTION_AT_BF16` off; each goes into a temporary
bundle of hard links beside `--bundle` (with `--keep`, the first is kept there, to serve: the
graph export now writes, without the hour a real-size export takes). Each round times, on each
in turn (each first in turn): 6 whole sequences of about 450 tokens one a call, a 1,000-token
prompt's call, and 8 held-out responses in one call after prompts of 300 and 1,000 tokens
(prefix_served.py's groups).
Printed: each way's median, the ratio, and how far the rewards of the whole sequences are apart.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prefix_served import held_out_texts, make_groups

from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.manifest import MANIFEST_FILE, Manifest, save_bundle
from rewardserve.bundle.prefix import prompt_ids
from rewardserve.export import openvino_ir


def linked_copy(bundle: Path, out: Path, written: Callable[[Path], bool]) -> None:
    """`bundle`'s files hard-linked into `out`, but its manifest and those `written` says the
    caller writes there (before `finish_copy`)."""
    for path in bundle.iterdir():
        if path.name != MANIFEST_FILE and not written(path):
            (out / path.name).hardlink_to(path)


def finish_copy(bundle: Path, out: Path) -> None:
    """`out`'s manifest: `bundle`'s, with the checksums of the files `out` now holds."""
    save_bundle(out, Manifest.model_validate_json((bundle / MANIFEST_FILE).read_text()))


def side_by_side(runtimes: dict[str, BundleRuntime], call: Callable, rounds: int) -> tuple[list[float], list]:
    """Each runtime's median seconds of `call(runtime)` over `rounds` (after one that warms up),
    each first in turn, and each one's last answer."""
    seconds: dict[str, list[float]] = {name: [] for name in runtimes}
    answers = {}
    for number in range(rounds + 1):
        for name in list(runtimes)[:: 1 if number % 2 else -1]:
            started = time.perf_counter()
            answers[name] = call(runtimes[name])
            if number:
                seconds[name].append(time.perf_counter() - started)
    return [statistics.median(s) for s in seconds.values()], [answers[name] for name in runtimes]


def w8a8_bundle(bundle: Path, out: Path, samples: list[dict], attention_at_bf16: bool) -> BundleRuntime:
    """`bundle` in `out`, its w8a8 graph written again from its portable prefix graph."""
    linked_copy(bundle, out, lambda path: path.name.startswith("model.w8a8."))
    openvino_ir.ATTENTION_AT_BF16 = attention_at_bf16
    try:
        openvino_ir.write_w8a8_graph(bundle / "model.prefix.portable.onnx", out / "model.w8a8.xml", samples)
    finally:
        openvino_ir.ATTENTION_AT_BF16 = True
    finish_copy(bundle, out)
    return BundleRuntime(out, precision="w8a8", prefix_reuse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="a new directory to keep the attention-at-bf16 bundle in, to serve")
    args = parser.parse_args()
    fp32 = BundleRuntime(args.bundle, precision="fp32")
    texts = held_out_texts()
    calibration = [fp32.encoder.encode([g["prompt"]], g["responses"])[0] for g in make_groups(fp32, 200, 1, 32, texts)]
    samples = [fp32.encoder.pad([s], fp32.length_bucket).arrays for s in calibration]
    del fp32  # its 1.9 GB of fp32 weights
    with tempfile.TemporaryDirectory(dir=args.bundle.parent) as scratch:
        bf16, int8 = args.keep or Path(scratch, "bf16"), Path(scratch, "int8")
        bf16.mkdir(parents=True)
        int8.mkdir()
        runtimes = {
            "attention at bf16": w8a8_bundle(args.bundle, bf16, samples, attention_at_bf16=True),
            "attention in int8": w8a8_bundle(args.bundle, int8, samples, attention_at_bf16=False),
        }
        compare(runtimes, texts, args.rounds)


def compare(runtimes: dict[str, BundleRuntime], texts, rounds: int) -> None:
    first = next(iter(runtimes.values()))
    bucket = first.length_bucket
    wholes = [first.encoder.encode([g["prompt"]], g["responses"])[0] for g in make_groups(first, 300, 1, 6, texts)]
    groups = {}
    for prompt_tokens in (300, 1000):
        group = make_groups(first, prompt_tokens, 8, 1, texts)[0]
        groups[prompt_tokens] = first.encoder.encode([group["prompt"]] * 8, group["responses"])
    states = {
        (id(runtime), tokens): runtime.prefix.prompt_states(prompt_ids(group[0]))
        for runtime in runtimes.values()
        for tokens, group in groups.items()
    }

    def whole(runtime: BundleRuntime) -> np.ndarray:
        return np.concatenate([runtime.score(runtime.encoder.pad([s], bucket)).rewards for s in wholes])

    def responses(prompt_tokens: int):
        def call(runtime: BundleRuntime) -> np.ndarray:
            kept = states[id(runtime), prompt_tokens]
            tails = [s.ids[kept.length :] for s in groups[prompt_tokens]]
            return runtime.prefix.score_responses(kept, tails, bucket).rewards

        return call

    def prompt(runtime: BundleRuntime) -> None:
        runtime.prefix.prompt_states(prompt_ids(groups[1000][0]))

    calls = {
        f"{len(wholes)} whole sequences, one a call": whole,
        "a 1,000-token prompt": prompt,
        "8 responses after a 300-token prompt": responses(300),
        "8 responses after a 1,000-token prompt": responses(1000),
    }
    apart = float(np.abs(np.subtract(*(whole(r) for r in runtimes.values()))).max())
    print(f"whole sequences' rewards, attention at bf16 against in int8: at most {apart:.3g} apart")
    for label, call in calls.items():
        (at_bf16, in_int8), _ = side_by_side(runtimes, call, rounds)
        print(
            f"{label}: attention at bf16 {at_bf16 * 1e3:.0f} ms, in int8 {in_int8 * 1e3:.0f} ms "
            f"({in_int8 / at_bf16:.3f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
