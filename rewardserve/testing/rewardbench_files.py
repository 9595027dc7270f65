"""Small files in RewardBench's and RewardBench 2's exact schemas, written from the HH pairs we
ship (never a copy of either benchmark), for the tests and for trying `rewardserve eval
--benchmark` without a download.

The HH pairs are arranged as the benchmarks are: each single-turn prompt's chosen response is
its correct completion; its rejected response and responses written for other prompts
(off-topic) are the incorrect ones. In Ties, `ref:N` holds the chosen response against three
off-topic ones, and `tied:N` both of the prompt's own responses (equally on topic) against
off-topic ones. A few rows repeat a completion word for word, so that two rewards tie exactly,
which the benchmarks' rules count in their own ways.

    python -m rewardserve.testing.rewardbench_files OUT_DIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rewardserve.data.hh import default_data_files, prompt_turns
from rewardserve.data.preferences import PreferenceExample, load_preferences
from rewardserve.data.rewardbench import REWARDBENCH2_SUBSETS, REWARDBENCH_SUBSETS, TIES

PER_SUBSET = 4  # RewardBench 2's prompts per best-of-4 subset
TIES_PROMPTS = 3  # each seen as ref:N and tied:N; one more as tied:N alone


def single_turn_pairs(limit: int, max_chars: int = 700) -> list[tuple[str, str, str]]:
    """(user prompt, chosen, rejected) of held-out HH pairs with one user turn, short enough for tiny models."""
    examples: list[PreferenceExample]
    examples, _ = load_preferences(default_data_files()[:1], split="heldout")
    pairs = []
    for e in examples:
        turns = prompt_turns(e.prompt)
        if len(turns) == 1 and len(turns[0]["content"]) + max(map(len, e.responses)) < max_chars:
            pairs.append((turns[0]["content"].strip(), e.responses[0].strip(), e.responses[1].strip()))
        if len(pairs) == limit:
            return pairs
    raise ValueError(f"only {len(pairs)} short single-turn HH pairs held out; {limit} wanted")


def _row(identifier: str, subset: str, prompt: str, chosen: Sequence[str], rejected: Sequence[str]) -> dict:
    return {
        "id": identifier,
        "prompt": prompt,
        "chosen": list(chosen),
        "rejected": list(rejected),
        "num_correct": len(chosen),
        "num_incorrect": len(rejected),
        "total_completions": len(chosen) + len(rejected),
        "models": ["hh-rlhf"] * (len(chosen) + len(rejected)),
        "subset": subset,
        "additional_metadata": {"source": "Anthropic HH-RLHF test split (MIT), arranged best-of-4"},
    }


def rewardbench2_rows() -> list[dict]:
    n = PER_SUBSET * (len(REWARDBENCH2_SUBSETS) - 1) + TIES_PROMPTS + 1
    pairs = single_turn_pairs(n)
    off_topic = [pairs[(i + 7) % n][2] for i in range(n)], [pairs[(i + 13) % n][1] for i in range(n)]
    rows, i = [], 0
    for subset in REWARDBENCH2_SUBSETS[:-1]:
        for _ in range(PER_SUBSET):
            prompt, chosen, rejected = pairs[i]
            wrong = [rejected, off_topic[0][i], off_topic[1][i]]
            if i % 7 == 3:  # an incorrect completion that repeats the correct one: an exact tie at the top
                wrong[2] = chosen
            rows.append(_row(str(i), subset, prompt, [chosen], wrong))
            i += 1
    for number in range(TIES_PROMPTS + 1):
        prompt, chosen, rejected = pairs[i]
        others = [off_topic[0][i], off_topic[1][i], pairs[(i + 3) % n][1]]
        if number < TIES_PROMPTS:  # the last prompt is seen as tied:N alone
            rows.append(_row(f"ref:{number}", TIES, prompt, [chosen], others))
        rows.append(_row(f"tied:{number}", TIES, prompt, [chosen, rejected], others[: 2 + number % 2]))
        i += 1
    return rows


def rewardbench_rows(per_subset: int = 2) -> list[dict]:
    n = per_subset * len(REWARDBENCH_SUBSETS)
    pairs = single_turn_pairs(n)
    rows = []
    for i, (prompt, chosen, rejected) in enumerate(pairs):
        subset = REWARDBENCH_SUBSETS[i // per_subset]
        rejected = chosen if i == 5 else rejected  # an exact tie: RewardBench counts it wrong
        rows.append({"prompt": prompt, "chosen": chosen, "chosen_model": "hh-rlhf", "rejected": rejected,
                     "rejected_model": "hh-rlhf", "subset": subset, "id": i})  # fmt: skip
    return rows


def write_jsonl(rows: Sequence[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_files(out: Path) -> tuple[Path, Path]:
    """(RewardBench 2's file, RewardBench's file) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    return (
        write_jsonl(rewardbench2_rows(), out / "rewardbench2-hh.jsonl"),
        write_jsonl(rewardbench_rows(), out / "rewardbench-hh.jsonl"),
    )


if __name__ == "__main__":
    for written in write_files(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(written)
