"""Preference data from files, in the shapes people have it, as one kind of example.

Files: JSONL (optionally .gz), JSON (a list of rows), Parquet, CSV, or a local HF `datasets`
directory (`save_to_disk`). Rows:

- explicit: ``{"prompt": str, "chosen": str, "rejected": str}``;
- implicit prompt: ``{"chosen": transcript, "rejected": transcript}`` (HH-RLHF): the prompt is
  the transcript before its final ``"\\n\\nAssistant:"``, which both transcripts must share;
- conversational: ``prompt``/``chosen``/``rejected`` as chat message lists (``prompt`` may be
  missing, then the messages ``chosen`` and ``rejected`` share are the prompt), rendered with
  the chat template;
- ranked: ``{"prompt", "responses": [...], "ranking": [best index, ...]}`` or with
  ``"scores": [...]`` (higher is better; equal scores are ties);
- optional ``margin`` (a number) or ``preference_strength`` (a label mapped to a margin).

Torch-free, so evaluation can run next to the server. Nothing is dropped silently: bad rows
are reported with file, line and reason, ties are counted, and loading fails when bad rows
exceed a set share.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from rewardserve.bundle.chat import (
    PAIR_LAYOUT_TEMPLATE,
    ChatTemplateError,
    Conversation,
    as_turns,
    check_messages,
    split_conversation,
)
from rewardserve.bundle.formatting import Text
from rewardserve.data import tables
from rewardserve.data.hh import Split, prompt_turns, source_name, split_of, split_transcript
from rewardserve.data.tables import BadRow, TableError, decode_json_cell, table_format

T = TypeVar("T")

# Llama 2's "large" margins for its four preference-strength labels (Touvron et al., 2023, table 28).
LLAMA2_MARGINS: dict[str, float] = {
    "significantly better": 3.0,
    "better": 2.0,
    "slightly better": 1.0,
    "negligibly better": 0.0,
    "unsure": 0.0,
}
LIST_COLUMNS = ("responses", "ranking", "scores")
CHAT_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferenceExample:
    """One prompt with two or more responses, best first, and their ranks (0 = best; equal = tie).

    `prompt` and `responses` are text: conversational rows rendered with the data's template
    (what pair-layout models read, and what splits are keyed on). Such rows keep their messages
    too (`prompt_messages`, `response_messages`), which chat-layout models read instead.
    """

    prompt: str
    responses: tuple[str, ...]
    ranks: tuple[int, ...]
    source: str
    margin: float | None = None
    prompt_messages: Conversation | None = field(default=None, compare=False)
    response_messages: tuple[Conversation, ...] | None = field(default=None, compare=False)

    @classmethod
    def pair(cls, prompt: str, chosen: str, rejected: str, source: str, margin: float | None = None):
        return cls(prompt, (chosen, rejected), (0, 1), source, margin)

    def model_inputs(self, layout: Literal["pair", "chat"]) -> list[tuple[Text, Text]]:
        """(prompt, response) of each response, as a model of `layout` reads them: the texts in
        the pair layout; in the chat layout the conversation: the row's own messages, else an HH
        transcript's turns (other text: one user turn), each response an assistant turn."""
        if layout == "pair":
            return [(self.prompt, r) for r in self.responses]
        prompt = self.prompt_messages or prompt_turns(self.prompt)
        return [(prompt, r) for r in self.response_messages or self.responses]

    def ordered_pairs(self) -> list[tuple[int, int]]:
        """(better, worse) response indices of every strictly ordered pair."""
        k = len(self.responses)
        return [(i, j) for i in range(k) for j in range(k) if self.ranks[i] < self.ranks[j]]


class RowError(ValueError):
    """A row that cannot become an example; the message is the reason."""


class DataError(ValueError):
    """The data as a whole is unusable (e.g. too many bad rows)."""


@dataclass(frozen=True)
class DataOptions:
    chat_template: str = PAIR_LAYOUT_TEMPLATE
    strength_margins: Mapping[str, float] = field(default_factory=lambda: dict(LLAMA2_MARGINS))
    max_bad_fraction: float = 0.05


@dataclass
class DataReport:
    """What loading read, kept, dropped and why."""

    rows: int = 0
    kept: int = 0
    other_split: int = 0
    ties: int = 0
    bad: list[str] = field(default_factory=list)  # "file:line N: reason"
    reasons: Counter[str] = field(default_factory=Counter)  # reason -> bad rows

    def add_bad(self, location: str, reason: str) -> None:
        self.bad.append(f"{location}: {reason}")
        self.reasons[reason] += 1

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.rows if self.rows else 0.0

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common()) or "none"
        return (
            f"{self.rows} rows: kept {self.kept}, other splits {self.other_split}, "
            f"ties dropped {self.ties}, bad {len(self.bad)} ({reasons})"
        )


# ---------------------------------------------------------------------------- file readers


def read_rows(path: Path) -> Iterator[tuple[str, object]]:
    """(location, row) for every row of a file; a line that is no row comes as a RowError.
    In CSV, list-valued cells (responses, ranking, scores, chat messages) are JSON text."""
    try:
        kind = table_format(path)
        for location, row in tables.read_rows(path):
            if isinstance(row, BadRow):
                yield location, RowError(str(row))
                continue
            if kind == "csv":
                _decode_csv_cells(row)
            yield location, row
    except TableError as e:
        raise DataError(str(e)) from None


def _decode_csv_cells(row: dict) -> None:
    for column in LIST_COLUMNS + CHAT_COLUMNS:
        decoded = decode_json_cell(row.get(column))
        if isinstance(decoded, list) and (column in LIST_COLUMNS or _looks_like_messages(decoded)):
            row[column] = decoded
    if row.get("margin") not in (None, ""):
        row["margin"] = _try_float(row["margin"])


def _try_float(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text


def _looks_like_messages(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


# ---------------------------------------------------------------------------- rows -> examples


def _text(row: Mapping, column: str) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        raise RowError(f"{column}: expected a string, got {type(value).__name__}")
    return value


def _margin(row: Mapping, options: DataOptions) -> float | None:
    if (margin := row.get("margin")) is not None:
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
            raise RowError("margin: expected a finite number")
        return float(margin)
    if (label := row.get("preference_strength")) is not None:
        key = str(label).strip().lower()
        if key not in options.strength_margins:
            raise RowError(f"preference_strength: unknown label {label!r}")
        return options.strength_margins[key]
    return None


def _conversational(
    options: DataOptions,
    prompt: object,
    responses: Sequence[object],
    columns: Sequence[str],
    ranks: Sequence[int],
    source: str,
    margin: float | None = None,
) -> PreferenceExample:
    """An example given as chat messages (text as one turn): rendered to text with the data's
    template, its messages kept; responses ordered best first."""
    turns = [as_turns(prompt, response) for response in responses]
    try:
        prompt_messages = check_messages(turns[0][0], "prompt")
        rendered = [
            split_conversation(options.chat_template, prompt_messages, check_messages(response, column))
            for (_, response), column in zip(turns, columns, strict=True)
        ]
    except ChatTemplateError as e:
        raise RowError(str(e)) from e
    order = sorted(range(len(responses)), key=lambda i: ranks[i])
    return PreferenceExample(
        rendered[0][0],
        tuple(rendered[i][1] for i in order),
        tuple(ranks[i] for i in order),
        source,
        margin,
        prompt_messages,
        tuple(turns[i][1] for i in order),
    )


def _pair_row(row: Mapping, source: str, options: DataOptions) -> PreferenceExample:
    chosen, rejected = row["chosen"], row["rejected"]
    margin = _margin(row, options)
    prompt = row.get("prompt")
    if isinstance(prompt, list) or isinstance(chosen, list) or isinstance(rejected, list):
        if prompt is None:  # implicit conversational prompt: the messages both sides share
            chosen, rejected = check_messages(chosen, "chosen"), check_messages(rejected, "rejected")
            shared = 0
            while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
                shared += 1
            if shared == 0:
                raise RowError("chosen and rejected share no prompt messages")
            prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        return _conversational(options, prompt, [chosen, rejected], ["chosen", "rejected"], (0, 1), source, margin)
    if "prompt" in row:
        return PreferenceExample.pair(
            _text(row, "prompt"), _text(row, "chosen"), _text(row, "rejected"), source, margin
        )
    try:
        prompt, chosen_text = split_transcript(_text(row, "chosen"))
        rejected_prompt, rejected_text = split_transcript(_text(row, "rejected"))
    except ValueError as e:
        raise RowError(f"implicit prompt: {e}") from e
    if prompt != rejected_prompt:
        raise RowError("implicit prompt: chosen and rejected transcripts differ before the final Assistant turn")
    return PreferenceExample.pair(prompt, chosen_text, rejected_text, source, margin)


def _ranks_of(row: Mapping, k: int) -> tuple[int, ...]:
    if (ranking := row.get("ranking")) is not None:
        if not isinstance(ranking, list) or sorted(ranking) != list(range(k)):
            raise RowError(f"ranking: expected a permutation of 0..{k - 1} (best first)")
        ranks = [0] * k
        for position, index in enumerate(ranking):
            ranks[index] = position
        return tuple(ranks)
    scores = row.get("scores")
    if not isinstance(scores, list) or len(scores) != k:
        raise RowError(f"ranked rows need `ranking` or `scores` with one entry per response ({k})")
    if not all(isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
        raise RowError("scores: expected finite numbers")
    levels = sorted(set(scores), reverse=True)
    return tuple(levels.index(s) for s in scores)


def _ranked_row(row: Mapping, source: str, options: DataOptions) -> PreferenceExample:
    responses = row["responses"]
    if not isinstance(responses, list) or len(responses) < 2:
        raise RowError("responses: expected a list of two or more responses")
    ranks = _ranks_of(row, len(responses))
    prompt = row.get("prompt")
    if isinstance(prompt, list) or any(isinstance(r, list) for r in responses):
        columns = [f"responses[{i}]" for i in range(len(responses))]
        return _conversational(options, prompt, responses, columns, ranks, source)
    texts = [_text({"responses": r}, "responses") for r in responses]
    order = sorted(range(len(texts)), key=lambda i: ranks[i])  # best first
    return PreferenceExample(
        _text(row, "prompt"), tuple(texts[i] for i in order), tuple(ranks[i] for i in order), source
    )


def parse_row(row: object, source: str, options: DataOptions) -> PreferenceExample:
    """The example a row describes; RowError with the reason when it describes none."""
    if isinstance(row, RowError):
        raise row
    if not isinstance(row, Mapping):
        raise RowError(f"expected an object, got {type(row).__name__}")
    if "responses" in row:
        return _ranked_row(row, source, options)
    if "chosen" in row and "rejected" in row:
        return _pair_row(row, source, options)
    raise RowError("expected `chosen` and `rejected` columns, or `responses` with `ranking` or `scores`")


def load_preferences(
    paths: Sequence[Path], split: Split = "all", options: DataOptions | None = None
) -> tuple[list[PreferenceExample], DataReport]:
    """Examples of `split` from `paths`, with a report; DataError when too many rows are bad."""
    options = options or DataOptions()
    examples: list[PreferenceExample] = []
    report = DataReport()
    for example in parsed_rows(paths, lambda row, source: parse_row(row, source, options), report):
        if len(set(example.ranks)) == 1 or len(set(example.responses)) == 1:
            report.ties += 1
        elif split != "all" and split_of(example.prompt) != split:
            report.other_split += 1
        else:
            examples.append(example)
            report.kept += 1
    check_bad_rows(report, options.max_bad_fraction)
    return examples, report


def parsed_rows(paths: Sequence[Path], parse: Callable[[object, str], T], report: DataReport) -> Iterator[T]:
    """`parse(row, source)` of every row of `paths` that parses; the others are counted in
    `report` with file, line and reason."""
    for path in map(Path, paths):
        source = source_name(path)
        for location, row in read_rows(path):
            report.rows += 1
            try:
                if isinstance(row, RowError):
                    raise row
                yield parse(row, source)
            except RowError as e:
                report.add_bad(f"{path}:{location}", str(e))


def check_bad_rows(report: DataReport, max_bad_fraction: float) -> None:
    """DataError when more than `max_bad_fraction` of the rows read were bad."""
    if report.bad_fraction > max_bad_fraction:
        shown = "\n  ".join(report.bad[:10])
        raise DataError(
            f"{len(report.bad)} of {report.rows} rows are bad ({report.bad_fraction:.1%}, more than the allowed "
            f"{max_bad_fraction:.1%}); first ones:\n  {shown}"
        )


# ---------------------------------------------------------------------------- for the commands


def data_argument(parser: argparse.ArgumentParser, flag: str, default: list[Path] | None, purpose: str) -> None:
    """A command-line option taking preference files, in every format `load_preferences` reads."""
    parser.add_argument(
        flag,
        nargs="+",
        type=Path,
        default=default,
        help=f"preference files (.jsonl[.gz], .json, .parquet, .csv) or datasets directories; {purpose}",
    )


def data_provenance(paths: Sequence[Path]) -> list[dict]:
    """Each file's name and sha256, for a checkpoint's or bundle's provenance."""
    from rewardserve.bundle.manifest import sha256_file

    return [{"file": p.name, "sha256": sha256_file(p)} for p in paths]


def load_reported(paths: Sequence[Path], split: Split, options: DataOptions, what: str) -> list[PreferenceExample]:
    """`load_preferences`, printing its report and the first bad rows."""
    examples, report = load_preferences(paths, split, options)
    print(f"{what} ({', '.join(p.name for p in paths)}, {split}): {report}")
    for line in report.bad[:5]:
        print(f"  bad row {line}")
    if len(report.bad) > 5:
        print(f"  ... and {len(report.bad) - 5} more bad rows")
    return examples
