"""The input format travels with a checkpoint, so export writes the format training used."""

from __future__ import annotations

import shutil
from pathlib import Path

from rewardserve.bundle import InputFormat

FORMAT_FILE = "rewardserve_input_format.json"
TOKENIZER_FILE = "tokenizer.json"


def derive_input_format(model_dir: Path, max_length: int) -> InputFormat:
    """The BERT-style pair layout `[CLS] prompt [SEP] response [SEP]` from a checkpoint's tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError(
            f"{model_dir}: only encoder checkpoints with [CLS]/[SEP] tokens are supported so far "
            f"(model_type {config.model_type!r})"
        )
    if not (tokenizer_file := Path(model_dir) / TOKENIZER_FILE).is_file():
        raise ValueError(f"{tokenizer_file}: a fast tokenizer file is required")
    positions = getattr(config, "max_position_embeddings", max_length)
    return InputFormat(
        prefix_ids=[tokenizer.cls_token_id],
        separator_ids=[tokenizer.sep_token_id],
        suffix_ids=[tokenizer.sep_token_id],
        pad_id=tokenizer.pad_token_id,
        max_length=min(max_length, positions),
        token_type_ids=getattr(config, "type_vocab_size", 0) >= 2,
    )


def save_input_format(checkpoint_dir: Path, fmt: InputFormat) -> None:
    (Path(checkpoint_dir) / FORMAT_FILE).write_text(fmt.model_dump_json(indent=2) + "\n")


def load_input_format(checkpoint_dir: Path) -> InputFormat:
    path = Path(checkpoint_dir) / FORMAT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; was this checkpoint written by `rewardserve train`?")
    return InputFormat.model_validate_json(path.read_text())


def copy_tokenizer(source_dir: Path, checkpoint_dir: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source_dir).save_pretrained(checkpoint_dir)
    shutil.copyfile(Path(source_dir) / TOKENIZER_FILE, Path(checkpoint_dir) / TOKENIZER_FILE)
