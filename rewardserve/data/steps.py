"""Step-labelled data for process reward models: rows `{prompt, steps, labels}`.

`prompt` is text or chat messages (the conversation so far), `steps` the response's reasoning
steps in order, `labels` one per step: whether the step is good. Labels come as the datasets
spell them: 1/0, true/false, Math-Shepherd's "+"/"-", and PRM800K's ratings 1/0/-1 (0, a
neutral step, counts as not good, as Lightman et al. treat it for a strict reward).
The files are those `load_preferences` reads (JSONL, JSON, Parquet, CSV).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rewardserve.bundle.chat import ChatTemplateError, Conversation, check_messages
from rewardserve.data.hh import Split, split_of
from rewardserve.data.preferences import DataReport, RowError, check_bad_rows, parsed_rows

# True == 1 and False == 0 as keys, and so do 1.0 and 0.0 (Parquet's floats).
LABELS = {1: 1, "+": 1, "1": 1, "true": 1, 0: 0, -1: 0, "-": 0, "0": 0, "-1": 0, "false": 0}


@dataclass(frozen=True)
class StepExample:
    prompt: str | Conversation
    steps: tuple[str, ...]
    labels: tuple[int, ...]  # 1: a good step, 0: not
    source: str


def parse_step_row(row: object, source: str) -> StepExample:
    """One row as a StepExample; RowError says what is wrong with it."""
    if not isinstance(row, dict):
        raise RowError("expected an object with prompt, steps and labels")
    missing = [name for name in ("prompt", "steps", "labels") if name not in row]
    if missing:
        raise RowError(f"{missing[0]}: missing")
    prompt, steps, labels = row["prompt"], row["steps"], row["labels"]
    if not isinstance(prompt, str):
        try:
            prompt = check_messages(prompt, "prompt")
        except ChatTemplateError as error:
            raise RowError(str(error)) from None
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise RowError("steps: expected a non-empty list of non-empty texts")
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise RowError(f"labels: expected one per step ({len(steps)})")
    return StepExample(prompt, tuple(steps), tuple(_label(label, i) for i, label in enumerate(labels)), source)


def _label(label: object, index: int) -> int:
    key = label.strip().lower() if isinstance(label, str) else label
    if isinstance(key, str | int | float) and key in LABELS:
        return LABELS[key]
    raise RowError(f"labels[{index}]: {label!r} is not a step label (1/0, true/false, +/-, or 1/0/-1)")


def load_step_examples(
    paths: Sequence[Path], split: Split = "all", max_bad_fraction: float = 0.05
) -> tuple[list[StepExample], DataReport]:
    """Step examples of `split` (split by prompt, as preference data are) from `paths`."""
    examples: list[StepExample] = []
    report = DataReport()
    for example in parsed_rows(paths, parse_step_row, report):
        text = example.prompt if isinstance(example.prompt, str) else str(example.prompt)
        if split != "all" and split_of(text) != split:
            report.other_split += 1
        else:
            examples.append(example)
            report.kept += 1
    check_bad_rows(report, max_bad_fraction)
    return examples, report
