"""Preference pairs from Anthropic HH-RLHF style transcripts, and the held-out split.

Torch-free, so evaluation can run next to the server.

An HH row is ``{"chosen": transcript, "rejected": transcript}``; both transcripts share the
conversation and differ in the final Assistant turn. The prompt is the transcript before its
final ``"\\n\\nAssistant:"`` marker and the response the stripped text after it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ASSISTANT_MARKER = "\n\nAssistant:"
REPO_DATA = Path(__file__).resolve().parents[2] / "data" / "hh-rlhf"
HH_FILES = ("helpful-base-test.jsonl.gz", "helpful-online-test.jsonl.gz", "harmless-base-test.jsonl.gz")

# A conversation's split is a function of its prompt alone, so every tool recomputes the same
# split, and all pairs of one conversation land on the same side.
HELDOUT_FRACTION = 0.25
Split = Literal["train", "heldout", "all"]


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    source: str


@dataclass
class LoadReport:
    """What loading kept and what it dropped, by reason."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        return f"kept {self.kept} pairs; dropped: {reasons}"


def split_transcript(transcript: str) -> tuple[str, str]:
    """(prompt, response) of an HH transcript; ValueError when it has no Assistant turn."""
    cut = transcript.rfind(ASSISTANT_MARKER)
    if cut < 0:
        raise ValueError("no final Assistant turn")
    return transcript[:cut], transcript[cut + len(ASSISTANT_MARKER) :].strip()


def split_of(prompt: str) -> Literal["train", "heldout"]:
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
    return "heldout" if bucket < HELDOUT_FRACTION else "train"


def _read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def source_name(path: Path) -> str:
    """'helpful-base' for helpful-base-test.jsonl.gz."""
    return path.name.split(".")[0].removesuffix("-test")


def load_hh(paths: Iterable[Path], split: Split = "all") -> tuple[list[PreferencePair], LoadReport]:
    """Pairs from HH transcript files; ties and mismatched conversations are dropped and counted."""
    pairs: list[PreferencePair] = []
    report = LoadReport()
    for path in map(Path, paths):
        for row in _read_jsonl(path):
            try:
                prompt, chosen = split_transcript(row["chosen"])
                rejected_prompt, rejected = split_transcript(row["rejected"])
            except (KeyError, TypeError, ValueError):
                report.dropped["malformed"] += 1
                continue
            if prompt != rejected_prompt:
                report.dropped["conversations differ"] += 1
            elif chosen == rejected:
                report.dropped["tie (identical responses)"] += 1
            elif split != "all" and split_of(prompt) != split:
                continue
            else:
                pairs.append(PreferencePair(prompt, chosen, rejected, source_name(path)))
                report.kept += 1
    return pairs, report


def default_data_files() -> list[Path]:
    """All HH files: what `eval` and export parity read by default."""
    return [REPO_DATA / name for name in HH_FILES]


def default_training_files() -> list[Path]:
    """The helpfulness files: the default model is a helpfulness reward model. (HH's harmless
    pairs often prefer a refusal where the helpful ones prefer compliance.)"""
    return [REPO_DATA / name for name in HH_FILES if name.startswith("helpful")]
