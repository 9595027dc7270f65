"""What scoring a sequence after its prompt costs or gains at the engine, by prompt length: for
lone prompts (distinct traffic, PPO) and for GRPO groups, on a decoder bundle at bf16 or w8a8.

Where OpenVINO's kernels round a sequence run whole differently from the same sequence run
after its prompt (the 0.6B shape at bf16 and w8a8), every sequence whose prompt reaches
`PREFIX_MIN_TOKENS` (64) takes the split path, shared or not, so that its reward does not
depend on whether a sibling arrived (`GraphRunner.splits_every_prompt`). This prints both sides
of that rule, on held-out HH items through the bundle's own runner:

- lone items, by prompt length: one whole sequence a call, 8 a call (the 8 nearest in length,
  padded to the longest of them), and split (a prompt call, then a one-row response call);
- groups of G held-out responses after one prompt: whole (8 a call) against split (the prompt
  once, then the G responses in one call).

Sequences/s, the median of 3 passes over the same items (kernels compiled in the first).

    python benchmarks/split_cost.py --bundle models/real-size/qwen3-0.6b/bundle-auto-2048   # ~10 min
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rewardserve.bench.timing import median_seconds
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime, EncodedSequence
from rewardserve.bundle.prefix import PrefixRunner, prompt_ids

LONE_RANGES = ((64, 128), (128, 192), (192, 256), (256, 384), (384, 640))
GROUP_PROMPTS = (96, 128, 192, 256)
ITEMS = 16


def rate(count: int, run: Callable[[], object], passes: int = 3) -> float:
    """Sequences/s of `run`, the median of `passes` after one that compiles the kernels."""
    return count / median_seconds(run, passes)


def whole(prefix: PrefixRunner, sequences: Sequence[EncodedSequence], per_call: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, len(sequences), per_call):
            batch = sequences[i : i + per_call]
            prefix.score_whole(batch, [False] * len(batch), prefix.runner.length_bucket)

    return run


def split(prefix: PrefixRunner, sequences: Sequence[EncodedSequence]) -> Callable[[], None]:
    """Each sequence after its own prompt (a group: every sequence shares the first's prompt)."""

    def run() -> None:
        groups = {prompt_ids(s).tobytes(): [] for s in sequences}
        for s in sequences:
            groups[prompt_ids(s).tobytes()].append(s)
        for group in groups.values():
            states = prefix.prompt_states(prompt_ids(group[0]))
            prefix.score_responses(states, [s.ids[states.length :] for s in group])

    return run


def lone_rows(prefix: PrefixRunner, sequences: Sequence[EncodedSequence]) -> None:
    print(f"lone items ({ITEMS} a range, each its own prompt), sequences/s:")
    header = f"{'prompt tokens':<16}{'median P + R':>14}{'whole, 1 a call':>17}{'whole, 8':>10}{'split':>8}"
    print(f"{header}{'split / whole 1':>17}")
    for lo, hi in LONE_RANGES:
        distinct = {prompt_ids(s).tobytes(): s for s in sequences if lo <= s.response_start < hi}
        chosen = sorted(list(distinct.values())[:ITEMS], key=len)  # a sample of the range (items are shuffled)
        if not chosen:
            continue
        one, eight = rate(len(chosen), whole(prefix, chosen, 1)), rate(len(chosen), whole(prefix, chosen, 8))
        apart = rate(len(chosen), split(prefix, chosen))
        p = np.median([s.response_start for s in chosen])
        r = np.median([len(s) - s.response_start for s in chosen])
        row = f"{f'{lo}-{hi}':<16}{f'{p:.0f} + {r:.0f}':>14}{one:>17.2f}{eight:>10.2f}{apart:>8.2f}"
        print(f"{row}{apart / one:>16.2f}x")


def group_rows(prefix: PrefixRunner, sequences: Sequence[EncodedSequence]) -> None:
    print("groups: G held-out responses of 100-250 tokens after one prompt, sequences/s:")
    print(f"{'prompt tokens':<16}{'G':>4}{'whole, 8 a call':>17}{'split':>8}{'split / whole':>15}")
    responses = [s.ids[s.response_start :] for s in sequences if 100 <= len(s) - s.response_start <= 250][:16]
    for length in GROUP_PROMPTS:
        prompt = prompt_ids(next(s for s in sequences if length <= s.response_start < length + 32))
        for size in (2, 8):
            group = [EncodedSequence(np.concatenate([prompt, r]), len(prompt)) for r in responses[:size]]
            together, apart = rate(size, whole(prefix, group, 8)), rate(size, split(prefix, group))
            print(f"{len(prompt):<16}{size:>4}{together:>17.2f}{apart:>8.2f}{apart / together:>14.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="a decoder bundle with a prefix graph")
    parser.add_argument("--precision", default="w8a8", choices=["bf16", "w8a8"])
    args = parser.parse_args()
    runtime = BundleRuntime(args.bundle, precision=args.precision, prefix_reuse=True)
    if runtime.prefix is None:
        parser.error(f"{args.bundle} has no prefix graph at {args.precision}")
    print(f"{args.bundle} at {args.precision}; lone prompts: {runtime.lone_prompts_split or 'run whole'}")
    items = hh_items(runtime.encoder, max_tokens=1024)
    sequences = runtime.encoder.encode([i["prompt"] for i in items], [i["response"] for i in items])
    lone_rows(runtime.prefix, sequences)
    group_rows(runtime.prefix, sequences)


if __name__ == "__main__":
    main()
