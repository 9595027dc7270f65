"""What copying a call's inputs and outputs costs the bf16 engine: OpenVinoSession as it runs
(inputs and outputs shared with OpenVINO, only the outputs asked for copied out) against the same
session copying every input in and every output out (OpenVINO's `infer` defaults), calls
interleaved, medians of the repeats. A prefix graph's keys and values dominate those bytes: a
response scored after a 300-token prompt of a 0.6B Qwen3 reads 69 MB of them and answers its own.

    python benchmarks/openvino_copies.py --bundle models/real-size/qwen3-0.6b/bundle-bf16   # ~2 min

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


class CopyingSession(OpenVinoSession):
    """OpenVinoSession with OpenVINO's defaults: every input copied in, every output copied out."""

    SHARE = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/real-size/qwen3-0.6b/bundle-bf16"))
    parser.add_argument("--prompt", type=int, default=300, help="prompt tokens")
    parser.add_argument("--response", type=int, default=200, help="response tokens")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    runtime = BundleRuntime(args.bundle, precision="bf16", prefix_reuse=True)
    if runtime.prefix is None:
        raise SystemExit(f"no bf16 prefix path here: {runtime.prefix_refused}")
    copying = CopyingSession(runtime.graph, runtime.threads or available_cpus())
    sessions = {"shared": runtime.session, "copying": copying}
    prefix, rng = runtime.prefix, np.random.default_rng(0)
    states = prefix.prompt_states(rng.integers(100, 50_000, args.prompt))
    response = [rng.integers(100, 50_000, args.response)]
    whole = [EncodedSequence(rng.integers(100, 50_000, args.prompt + args.response), 0)]
    cases = {
        f"a response of {args.response} after {args.prompt}": lambda: prefix.score_responses(states, response),
        f"a whole sequence of {args.prompt + args.response}": lambda: runtime.score(runtime.encoder.pad(whole)),
        f"a prompt of {args.prompt}, keys and values out": lambda: prefix.prompt_states(whole[0].ids[: args.prompt]),
    }
    print(f"{runtime.machine.describe()}; {args.bundle}, bf16, median of {args.repeats - 1} calls after one")
    for name, call in cases.items():
        seconds: dict[str, list[float]] = {label: [] for label in sessions}
        for _ in range(args.repeats):
            for label, session in sessions.items():
                runtime.session = session
                started = time.perf_counter()
                call()
                seconds[label].append(time.perf_counter() - started)
        shared, copying = (statistics.median(seconds[label][1:]) for label in sessions)
        print(f"{name:<40} shared {shared:.3f} s, copying {copying:.3f} s: {copying / shared:.2f}x")
    runtime.session = sessions["shared"]


if __name__ == "__main__":
    main()
