"""The HH-RLHF data shipped with the package, how its transcripts split into prompt and response, and the
train/validation/held-out split every tool recomputes. Torch-free.

An HH row is ``{"chosen": transcript, "rejected": transcript}``; both transcripts share the
conversation and differ in the final Assistant turn. The prompt is the transcript before its
final ``"\\n\\nAssistant:"`` marker and the response the stripped text after it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from rewardserve.bundle import policy_text
from rewardserve.bundle.chat import Conversation

ASSISTANT_MARKER = "\n\nAssistant:"
# Shipped inside the package (package data), so an installed rewardserve finds them too.
HH_DIR = Path(__file__).resolve().parent / "hh_rlhf"
HH_FILES = ("helpful-base-test.jsonl.gz", "helpful-online-test.jsonl.gz", "harmless-base-test.jsonl.gz")

# A conversation's split is a function of its prompt alone, so every tool recomputes the same
# split, and all pairs of one conversation land on the same side. Training evaluates (and keeps
# its best checkpoint) on `validation`; reported figures come from `heldout`, which no training
# decision has seen.
HELDOUT_FRACTION = 0.25
VALIDATION_FRACTION = 0.10
Split = Literal["train", "validation", "heldout", "all"]


def split_transcript(transcript: str) -> tuple[str, str]:
    """(prompt, response) of an HH transcript; ValueError when it has no Assistant turn."""
    cut = transcript.rfind(ASSISTANT_MARKER)
    if cut < 0:
        raise ValueError("no final Assistant turn")
    return transcript[:cut], transcript[cut + len(ASSISTANT_MARKER) :].strip()


def prompt_turns(prompt: str) -> Conversation:
    """An HH prompt transcript as chat messages (other text as one user turn): how held-out HH
    prompts reach a model that reads conversations."""
    try:
        return policy_text.parse(prompt, "hh")
    except policy_text.PolicyTextError:
        return [{"role": "user", "content": prompt}]


def split_of(prompt: str) -> Literal["train", "validation", "heldout"]:
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
    if bucket < HELDOUT_FRACTION:
        return "heldout"
    return "validation" if bucket < HELDOUT_FRACTION + VALIDATION_FRACTION else "train"


def source_name(path: Path) -> str:
    """'helpful-base' for helpful-base-test.jsonl.gz."""
    return path.name.split(".")[0].removesuffix("-test")


def default_data_files() -> list[Path]:
    """All HH files: what `eval` and export parity read by default."""
    return [HH_DIR / name for name in HH_FILES]


def default_training_files() -> list[Path]:
    """All HH files: the default model learns helpfulness and harmlessness together. Trained on
    the helpful files alone it ranks compliance over refusal and scores 0.39 on harmless-base
    held-out pairs, below chance (docs/get-started.md, "The default model")."""
    return default_data_files()
