"""A prompt no other queued sequence shares, served at bf16 or w8a8: its reward, and its cost.

OpenRLHF and verl send a GRPO group one sample a request. The first sample of a group arrives
before its prompt's keys and values are kept; the rest are read after them. Where the engine's
kernels round a sequence run whole differently from the same sequence run after its prompt
(OpenVINO's bf16, w8a8), the first sample's reward then comes from another path than its
siblings'. This script measures both sides of scoring every such sequence after its prompt
(`GraphRunner.splits_every_prompt`), against the rewardserve of an earlier commit (`--today`, a
worktree) in the same run:

- path agreement: groups of G responses sent one sample a request, then again as one request;
  the largest |reward one a request - reward in the group's request|, the first arrival apart;
- cost: distinct single-item /score requests (every prompt lone), 8 in flight; sequences/s,
  the median of 3 rounds, each round new items.

    python benchmarks/lone_prompts.py --bundle models/real-size/qwen3-0.6b/bundle-auto \\
        --precision w8a8 --today ../rewardserve-today
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from rewardserve.bench.process import rewardserve_process
from rewardserve.data.hh import default_data_files, prompt_turns
from rewardserve.data.preferences import load_preferences

GROUPS, GROUP_SIZE, ROUNDS, ROUND_ITEMS, IN_FLIGHT = 6, 8, 3, 32, 8


def conversations() -> tuple[list[tuple[list[dict], list[str]]], list[dict]]:
    """(GRPO groups: a held-out conversation and G held-out responses), and distinct items, each
    a conversation and one response: prompts of 100-400 tokens, above prefix reuse's minimum."""
    examples, _ = load_preferences(default_data_files()[:1], split="heldout")
    long_enough = [e for e in examples if 400 < len(e.prompt) < 1500]
    responses = [r for e in examples[:400] for r in e.responses if 100 < len(r) < 900]
    groups = [
        (prompt_turns(e.prompt), responses[GROUP_SIZE * i : GROUP_SIZE * (i + 1)])
        for i, e in enumerate(long_enough[:GROUPS])
    ]
    lone = [
        {"messages": [*prompt_turns(e.prompt), {"role": "assistant", "content": e.responses[0]}]}
        for e in long_enough[GROUPS : GROUPS + ROUNDS * ROUND_ITEMS + IN_FLIGHT]
    ]
    return groups, lone


def path_gaps(client: httpx.Client, groups: list[tuple[list[dict], list[str]]]) -> tuple[float, float]:
    """Largest |one a request - in one request| of each group's first sample, and of the rest."""
    first, rest = 0.0, 0.0
    for prompt, responses in groups:
        items = [{"messages": [*prompt, {"role": "assistant", "content": r}]} for r in responses]
        alone = np.array([client.post("/score", json={"items": [item]}).json()["rewards"][0] for item in items])
        together = np.array(client.post("/score", json={"items": items}).json()["rewards"])
        gaps = np.abs(alone - together)
        first, rest = max(first, float(gaps[0])), max(rest, float(gaps[1:].max()))
    return first, rest


def lone_rate(client: httpx.Client, items: list[dict]) -> float:
    """Sequences/s of `items` sent as single-item requests, IN_FLIGHT at a time."""

    def one(item: dict) -> float:
        return client.post("/score", json={"items": [item]}).json()["rewards"][0]

    started = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(one, items))
    return len(items) / (time.perf_counter() - started)


def measure(bundle: Path, precision: str, source: Path | None) -> dict[str, float]:
    groups, lone = conversations()
    env = {"REWARDSERVE_PRECISION": precision, "REWARDSERVE_CACHE_SIZE": "0"}
    with rewardserve_process(bundle, env, source) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        lone_rate(client, lone[:IN_FLIGHT])  # warm-up: every kernel compiled
        rates = [lone_rate(client, lone[IN_FLIGHT + ROUND_ITEMS * r : IN_FLIGHT + ROUND_ITEMS * (r + 1)])
                 for r in range(ROUNDS)]  # fmt: skip
        first, rest = path_gaps(client, groups)
    return {"first": first, "rest": rest, "rate": statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--precision", default="w8a8", choices=["bf16", "w8a8"])
    parser.add_argument("--today", type=Path, help="a worktree of the commit to compare with")
    args = parser.parse_args()
    runs = {"this commit": measure(args.bundle, args.precision, None)}
    if args.today:
        runs["--today"] = measure(args.bundle, args.precision, args.today)
    print(f"{args.precision}, {GROUPS} groups of {GROUP_SIZE}; {ROUND_ITEMS} lone items a round, {IN_FLIGHT} in flight")
    print(f"{'server':<14}{'first sample |Δ|':>18}{'the rest |Δ|':>14}{'lone seq/s':>12}")
    for name, run in runs.items():
        print(f"{name:<14}{run['first']:>18.2e}{run['rest']:>14.2e}{run['rate']:>12.2f}")
    if args.today:
        print(f"lone items: this commit / --today = {runs['this commit']['rate'] / runs['--today']['rate']:.2f}x")


if __name__ == "__main__":
    main()
