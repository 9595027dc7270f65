"""`rewardserve eval --benchmark rewardbench2 FILE` (or `rewardbench`): a published benchmark's
figures for a bundle in-process or a served model, scored by the benchmark's own rules.

Every completion is scored as the benchmark's code hands it to a model: the prompt as the
user's turn and the completion as the assistant's, in the model's own chat template, and its
raw reward is what the rules read (no sigmoid, no calibration). A judge is evaluated the same
way: a yes/no or rating judge's reward is its verdict's, one per completion. A pairwise judge
gives no reward per completion, so each prompt's completions are ranked as a K-wise `/compare`
ranks them: every ordered pair read, and each completion's reward the least-squares
Bradley-Terry score of the judge's pairwise log-odds (`bundle/judge/pairwise.py`); the rules
then read those rewards.

The report holds every figure and every completion's reward, so two runs can be compared.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from rewardserve.client.http import chat_item
from rewardserve.client.scorers import Scorer, ScorerFacts
from rewardserve.data.rewardbench import TIES, Benchmark, BenchmarkPrompt, load_benchmark
from rewardserve.eval import rewardbench, rewardbench2
from rewardserve.eval.rewardbench2 import TiesRow

CHUNK = 256  # completions per scorer call: a server's request, or an in-process batch job


def completion_rewards(
    scorer: Scorer, prompts: Sequence[BenchmarkPrompt], pairwise: bool, progress: bool = True
) -> list[list[float]]:
    """Each prompt's completions' raw rewards, in the prompt's order (correct ones first)."""
    total = sum(len(p.completions) for p in prompts)
    with tqdm(total=total, unit=" completions", desc="scoring", disable=not progress) as bar:
        if pairwise:
            rewards = []
            for p in prompts:
                rewards.append(scorer.rank([{"role": "user", "content": p.prompt}], list(p.completions)).rewards)
                bar.update(len(p.completions))
            return rewards
        items = [chat_item(conversation) for p in prompts for conversation in p.conversations()]
        flat: list[float] = []
        for start in range(0, len(items), CHUNK):
            flat += scorer.score_items(items[start : start + CHUNK])
            bar.update(len(items[start : start + CHUNK]))
    ends = [0]
    for p in prompts:
        ends.append(ends[-1] + len(p.completions))
    return [flat[a:b] for a, b in zip(ends, ends[1:], strict=False)]


def margin(prompt: BenchmarkPrompt, rewards: Sequence[float]) -> float:
    """How far the right answer stands above the best wrong one: the first correct completion's
    reward less the best incorrect one's (Ties: its rule's margin, the worst correct one's)."""
    if len(rewards) == prompt.num_correct:
        return float("nan")
    if prompt.subset == TIES:
        return TiesRow.of(rewards, prompt.num_correct).margin
    return rewards[0] - max(rewards[prompt.num_correct :])


def evaluate_benchmark(scorer: Scorer, path: Path, benchmark: Benchmark, *, where: str, progress: bool = True) -> dict:
    """The benchmark's figures for `scorer` on the file at `path`, with every completion's reward."""
    prompts = load_benchmark(path, benchmark)
    facts: ScorerFacts = scorer.describe()
    rewards = completion_rewards(scorer, prompts, facts.pairwise, progress)
    rules = rewardbench2 if benchmark == "rewardbench2" else rewardbench
    figures = rules.figures(prompts, rewards)
    counts = {name: sum(p.subset == name for p in prompts) for name in figures["subsets"]}
    return {
        "benchmark": benchmark,
        "data": str(path),
        "scorer": where,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **asdict(facts),
        "reward": "raw",
        "overall": figures["overall"],
        "sections": figures.get("sections", {}),
        "subsets": [{"name": n, "figure": value, "prompts": counts[n]} for n, value in figures["subsets"].items()],
        "prompts": [
            {"id": p.id, "subset": p.subset, "num_correct": p.num_correct, "rewards": r, "result": result,
             "margin": margin(p, r)}
            for p, r, result in zip(prompts, rewards, figures["results"], strict=True)
        ],
    }  # fmt: skip


def table(report: dict) -> str:
    """The figures as the benchmark's leaderboard shows them: per cent."""
    facts = f"precision {report['precision'] or 'not said'}" + (f", {report['judge']} judge" if report["judge"] else "")
    lines = [f"{report['benchmark']}: {report['model']} ({facts})", f"{'subset':<24}{'prompts':>8}{'score':>8}"]
    lines += [f"{s['name']:<24}{s['prompts']:>8}{100 * s['figure']:>8.1f}" for s in report["subsets"]]
    lines += [f"{name + ' (section)':<24}{'':>8}{100 * value:>8.1f}" for name, value in report["sections"].items()]
    lines.append(f"{'overall':<24}{len(report['prompts']):>8}{100 * report['overall']:>8.1f}")
    return "\n".join(lines)
