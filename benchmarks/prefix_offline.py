"""`rewardserve eval --bundle` with prefix reuse on and off: held-out HH pairs (a conversation and
its two responses) compared in-process as eval compares them (evaluate.compare_pairs on a
LocalScorer), on a decoder bundle with a prefix graph.

    python benchmarks/prefix_offline.py --bundle models/real-size/qwen3-0.6b/bundle   # ~15 min on 2 cores

The same pairs, on then off, for --rounds rounds; medians of pairs/s and the ratio of each
round's pair, taken side by side. The rewards of both sides are checked equal (1e-4). Also
prints how many sequences ran after a shared prompt, and the prompts' and responses' lengths.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from rewardserve.bundle.prefix import shared_prompts
from rewardserve.client.scorers import LocalScorer
from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import DataOptions, load_preferences
from rewardserve.eval.evaluate import compare_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=48, help="held-out HH pairs (the first of the file)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    scorers = {"on": LocalScorer(args.bundle), "off": LocalScorer(args.bundle, prefix_reuse=False)}
    runtime = scorers["on"].runtime
    if runtime.prefix is None:
        raise SystemExit(f"prefix reuse is off for this bundle: {runtime.prefix_refused}")
    manifest = runtime.manifest
    layout = manifest.input_format.layout
    examples, _ = load_preferences(
        default_data_files()[:1], split="heldout", options=DataOptions(manifest.input_format.chat_template)
    )
    examples = examples[: args.pairs]

    inputs = [e.model_inputs(layout) for e in examples]
    sequences = runtime.encoder.encode([p for pair in inputs for p, _ in pair], [r for pair in inputs for _, r in pair])
    split = shared_prompts(sequences)
    prompts = [s.response_start for s in sequences]
    responses = [len(s) - s.response_start for s in sequences]
    print(
        f"{len(examples)} pairs, {len(sequences)} sequences; prompt tokens median {statistics.median(prompts):.0f} "
        f"(max {max(prompts)}), response tokens median {statistics.median(responses):.0f}; "
        f"{len(split)} sequences after a shared prompt, {len(sequences) - len(split)} whole"
    )

    rates: dict[str, list[float]] = {"on": [], "off": []}
    rewards: dict[str, np.ndarray] = {}
    for round_ in range(args.rounds):
        for name, scorer in scorers.items():
            started = time.perf_counter()
            compared = compare_pairs(scorer, examples, layout, progress=True)
            seconds = time.perf_counter() - started
            rates[name].append(len(examples) / seconds)
            rewards[name] = np.concatenate([compared.better, compared.worse])
            print(f"round {round_ + 1}, reuse {name}: {rates[name][-1]:.3f} pairs/s ({seconds:.0f} s)")
    gap = float(np.abs(rewards["on"] - rewards["off"]).max())
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    print(f"max |reward on - off|: {gap:.2g}" + ("" if gap <= 1e-4 else "  BEYOND 1e-4"))
    print(
        f"pairs/s, median of {args.rounds}: reuse on {statistics.median(rates['on']):.3f}, "
        f"off {statistics.median(rates['off']):.3f}; on/off {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}x' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
