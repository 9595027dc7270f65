"""What keeping a prompt's keys and values at bf16 changes in the bf16 prefix path: OpenVinoSession
as it runs (keys and values in and out as bf16) against the same session with fp32 ones, on one
bundle's graph, calls interleaved, medians of the repeats; the rewards of both, and the bytes a
kept prompt holds.

    python benchmarks/bf16_keys_values.py --bundle models/real-size/qwen3-0.6b/bundle-bf16-fold   # ~3 min

Needs a decoder bundle whose bf16 prefix path serves on this machine (bf16 matrix engines);
random weights do (`real_size_export.py --precision bf16 --set-aside-gate`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from rewardserve.bundle import BundleRuntime, EncodedSequence
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.prefix import PrefixRunner


class Fp32KeysAndValues(OpenVinoSession):
    BF16_KEYS_AND_VALUES = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/real-size/qwen3-0.6b/bundle-bf16-fold"))
    parser.add_argument("--prompt", type=int, default=300, help="prompt tokens")
    parser.add_argument("--responses", type=int, default=8, help="responses after it, 100-300 tokens each")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    bf16 = BundleRuntime(args.bundle, precision="bf16", prefix_reuse=True)
    if bf16.prefix is None:
        raise SystemExit(f"no bf16 prefix path here: {bf16.prefix_refused}")
    fp32 = BundleRuntime(args.bundle, precision="bf16", prefix_reuse=True)
    fp32.session = Fp32KeysAndValues(fp32.graph, fp32.threads or available_cpus())
    fp32.prefix = PrefixRunner(fp32)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 50_000, args.prompt)
    responses = [rng.integers(100, 50_000, n) for n in rng.integers(100, 300, args.responses)]
    whole = [EncodedSequence(np.concatenate([prompt, responses[0]]), args.prompt)]
    kept = {"bf16": bf16.prefix.prompt_states(prompt), "fp32": fp32.prefix.prompt_states(prompt)}
    runtimes = {"bf16": bf16, "fp32": fp32}
    print(f"{bf16.machine.describe()}; {args.bundle}, bf16 engine, median of {args.repeats - 1} calls after one")
    print(f"a kept prompt of {args.prompt} tokens: bf16 {kept['bf16'].nbytes / 2**20:.1f} MiB, "
          f"fp32 {kept['fp32'].nbytes / 2**20:.1f} MiB")  # fmt: skip
    rewards = {k: r.prefix.score_responses(kept[k], responses).rewards for k, r in runtimes.items()}
    print(f"rewards of {len(responses)} responses after it: max |bf16 - fp32 keys and values| "
          f"{np.abs(rewards['bf16'] - rewards['fp32']).max():.3g}")  # fmt: skip
    cases = {
        f"the prompt, keys and values out ({args.prompt})": lambda k: runtimes[k].prefix.prompt_states(prompt),
        f"{len(responses)} responses after it, one call": lambda k: runtimes[k].prefix.score_responses(
            kept[k], responses
        ),
        "each response alone": lambda k: [runtimes[k].prefix.score_responses(kept[k], [r]) for r in responses],
        "a whole sequence, its prompt kept": lambda k: runtimes[k].prefix.score_whole(whole, [True]),
    }
    for name, call in cases.items():
        seconds: dict[str, list[float]] = {k: [] for k in runtimes}
        for _ in range(args.repeats):
            for k in runtimes:
                started = time.perf_counter()
                call(k)
                seconds[k].append(time.perf_counter() - started)
        at_bf16, at_fp32 = (statistics.median(seconds[k][1:]) for k in runtimes)
        print(f"{name:<44} bf16 {at_bf16:.3f} s, fp32 {at_fp32:.3f} s: {at_fp32 / at_bf16:.2f}x")


if __name__ == "__main__":
    main()
