"""RewardBench's files, read as the benchmark's code reads them, every row checked.

RewardBench 2 (`allenai/reward-bench-2`): one row per prompt, with its correct completions in
`chosen` and its incorrect ones in `rejected`; columns `id, prompt, chosen, rejected,
num_correct, num_incorrect, total_completions, models, subset, additional_metadata`. Six
subsets; in Ties, each prompt comes twice, as `ref:N` (one correct answer) and `tied:N`
(several equally correct ones).

RewardBench (`allenai/reward-bench`, its `filtered` split): one row per pair, columns `prompt,
chosen, rejected, chosen_model, rejected_model, subset, id`, in 23 subsets that four sections
weigh by their example counts.

Both become `BenchmarkPrompt`s: a prompt and its completions, the correct ones first, which is
the order the benchmark's rules read them in. The files are the user's download: nothing is
fetched. A row that breaks the schema is refused with its file, row and field, and so is a file
that misses a subset: its figures would not be the benchmark's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rewardserve.data.tables import BadRow, decode_json_cell, read_rows

Benchmark = Literal["rewardbench", "rewardbench2"]

REWARDBENCH2_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
REWARDBENCH2_COLUMNS = (
    "id", "prompt", "chosen", "rejected", "num_correct", "num_incorrect", "total_completions", "models", "subset",
    "additional_metadata",
)  # fmt: skip
TIES = "Ties"
TIES_KINDS = ("ref", "tied")  # a Ties id is "ref:N" or "tied:N", N the prompt's number

# RewardBench's sections, and the example count that weighs each subset in its section (the
# benchmark's own table: math-prm counts 984 for its 447 rows, so that it weighs as much as the
# six code subsets together).
REWARDBENCH_SECTIONS: dict[str, dict[str, int]] = {
    "Chat": {"alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
             "mt-bench-med": 40},
    "Chat Hard": {"mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
                  "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46},
    "Safety": {"refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 154,
               "xstest-should-respond": 250, "donotanswer": 136},
    "Reasoning": {"math-prm": 984, "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164,
                  "hep-python": 164, "hep-rust": 164},
}  # fmt: skip
REWARDBENCH_SUBSETS = tuple(subset for weights in REWARDBENCH_SECTIONS.values() for subset in weights)
REWARDBENCH_COLUMNS = ("id", "prompt", "chosen", "rejected", "subset")  # and chosen_model, rejected_model


class BenchmarkError(ValueError):
    """A file that is not the benchmark: the message names the file, the row and the field."""


@dataclass(frozen=True)
class BenchmarkPrompt:
    """One prompt (the user's turn) and its completions, the `num_correct` correct ones first."""

    id: str
    subset: str
    prompt: str
    completions: tuple[str, ...]
    num_correct: int

    def conversations(self) -> list[list[dict[str, str]]]:
        """Each completion as the benchmark's code hands it to a model: the prompt as the user's
        turn, the completion as the assistant's, for the model's own chat template."""
        user = {"role": "user", "content": self.prompt}
        return [[user, {"role": "assistant", "content": completion}] for completion in self.completions]


def load_benchmark(path: Path, benchmark: Benchmark) -> list[BenchmarkPrompt]:
    """Every row of `path` (.parquet, .jsonl[.gz], .json, or a datasets directory), checked;
    BenchmarkError naming the row and field of the first that breaks the benchmark's schema."""
    read_row = _rewardbench2_row if benchmark == "rewardbench2" else _rewardbench_row
    prompts = []
    for where, row in read_rows(path):
        if isinstance(row, BadRow):
            raise BenchmarkError(f"{path} {where}: {row}")
        if not isinstance(row, Mapping):
            raise BenchmarkError(f"{path} {where}: not a row of named columns")
        try:
            prompts.append(read_row(row))
        except BenchmarkError as error:
            raise BenchmarkError(f"{path} {where}{_named(row)}: {error}") from None
    _check_subsets(path, prompts, REWARDBENCH2_SUBSETS if benchmark == "rewardbench2" else REWARDBENCH_SUBSETS)
    if benchmark == "rewardbench2":
        _check_unique_ties(path, prompts)
    return prompts


def _named(row: Mapping[str, Any]) -> str:
    return f" (id {row['id']!r})" if isinstance(row.get("id"), str | int) else ""


def _rewardbench2_row(row: Mapping[str, Any]) -> BenchmarkPrompt:
    _check_columns(row, REWARDBENCH2_COLUMNS)
    subset = _subset(row, REWARDBENCH2_SUBSETS)
    chosen, rejected = _texts(row, "chosen"), _texts(row, "rejected")
    counts = {name: _count(row, name) for name in ("num_correct", "num_incorrect", "total_completions")}
    if counts["num_correct"] != len(chosen):
        raise BenchmarkError(f"num_correct: {counts['num_correct']}, but chosen holds {len(chosen)} completions")
    if counts["num_incorrect"] != len(rejected):
        raise BenchmarkError(f"num_incorrect: {counts['num_incorrect']}, but rejected holds {len(rejected)}")
    if counts["total_completions"] != len(chosen) + len(rejected):
        raise BenchmarkError(
            f"total_completions: {counts['total_completions']}, but chosen and rejected hold "
            f"{len(chosen) + len(rejected)} completions"
        )
    if not chosen:
        raise BenchmarkError("chosen: no correct completion; the benchmark's rules read the first one")
    identifier = str(row["id"])
    if subset == TIES:
        kind, _, number = identifier.partition(":")
        if kind not in TIES_KINDS or not number.isdigit():
            raise BenchmarkError(f"id: {identifier!r}; a Ties row's id is 'ref:N' or 'tied:N'")
    return BenchmarkPrompt(identifier, subset, _text(row, "prompt"), (*chosen, *rejected), len(chosen))


def _rewardbench_row(row: Mapping[str, Any]) -> BenchmarkPrompt:
    _check_columns(row, REWARDBENCH_COLUMNS)
    subset = _subset(row, REWARDBENCH_SUBSETS)
    completions = (_text(row, "chosen"), _text(row, "rejected"))
    return BenchmarkPrompt(str(row["id"]), subset, _text(row, "prompt"), completions, 1)


def _check_columns(row: Mapping[str, Any], columns: Sequence[str]) -> None:
    missing = [name for name in columns if name not in row]
    if missing:
        raise BenchmarkError(
            f"{missing[0]}: missing; the row has {', '.join(map(str, row)) or 'no columns'} "
            f"(the benchmark's columns: {', '.join(columns)})"
        )


def _subset(row: Mapping[str, Any], known: Sequence[str]) -> str:
    subset = row["subset"]
    if subset not in known:
        raise BenchmarkError(f"subset: {subset!r} is not one of the benchmark's ({', '.join(known)})")
    return subset


def _text(row: Mapping[str, Any], name: str) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise BenchmarkError(f"{name}: expected text, got {type(value).__name__}")
    return value


def _texts(row: Mapping[str, Any], name: str) -> list[str]:
    value = decode_json_cell(row[name])  # a list in Parquet and JSONL; JSON text in a CSV cell
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        raise BenchmarkError(f"{name}: expected a list of completions (text)")
    return value


def _count(row: Mapping[str, Any], name: str) -> int:
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BenchmarkError(f"{name}: expected a count, got {value!r}")
    return value


def _check_subsets(path: Path, prompts: Sequence[BenchmarkPrompt], subsets: Sequence[str]) -> None:
    present = Counter(p.subset for p in prompts)
    missing = [name for name in subsets if name not in present]
    if missing:
        raise BenchmarkError(
            f"{path}: subset: no rows of {', '.join(repr(name) for name in missing)}; the benchmark's figures need "
            f"every subset ({', '.join(subsets)})"
        )


def _check_unique_ties(path: Path, prompts: Sequence[BenchmarkPrompt]) -> None:
    counts = Counter(p.id for p in prompts if p.subset == TIES)
    twice = next((identifier for identifier, n in counts.items() if n > 1), None)
    if twice is not None:
        raise BenchmarkError(f"{path}: id: {twice!r} names two Ties rows; the Ties rule pairs ref:N with tied:N")
