"""Process reward model training on `{prompt, steps, labels}` rows: each step's label sits at its
separator token, a two-class token classifier learns it, and `rewardserve export
--step-separator` serves the step rewards.

The rows are built from real HH conversations: each response cut into sentences, every step of
a chosen response labelled good and every step of a rejected one not, as Math-Shepherd labels
the steps of a completion by its outcome."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from live import free_port, running
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForTokenClassification

from rewardserve.bundle import SequenceEncoder, load_bundle
from rewardserve.cli import main
from rewardserve.data.preferences import RowError
from rewardserve.data.steps import StepExample, load_step_examples, parse_step_row
from rewardserve.service import Settings
from rewardserve.training.checkpoint import load_input_format

SEPARATOR = "<extra_0>"


def sentences(text: str) -> list[str]:
    return [s.strip() + "." for s in text.split(".") if s.strip()][:8]


@pytest.fixture(scope="module")
def step_rows(tmp_path_factory, train_pairs) -> Path:
    rows = []
    for example in train_pairs[:48]:
        for response, label in zip(example.responses, (1, 0), strict=True):
            if steps := sentences(response):
                rows.append({"prompt": example.prompt, "steps": steps, "labels": [label] * len(steps)})
    path = tmp_path_factory.mktemp("steps") / "hh-steps.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def trained_prm(tiny_base_model, step_rows, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prm-checkpoint")
    argv = ["train", "--base-model", str(tiny_base_model), "--data", str(step_rows), "--out", str(out)]
    argv += ["--step-separator", SEPARATOR, "--max-steps", "6", "--batch-size", "4", "--max-length", "256"]
    assert main([*argv, "--learning-rate", "1e-3", "--checkpoint-steps", "0"]) == 0
    return out


def test_step_labels_are_read_as_the_datasets_spell_them():
    row = {"prompt": "2 + 2?", "steps": ["2 + 2 = 4.", "So 5.", "Hm.", "Done."], "labels": [1, "-", False, "+"]}
    assert parse_step_row(row, "x").labels == (1, 0, 0, 1)
    assert parse_step_row({**row, "labels": [1, 0, -1, True]}, "x").labels == (1, 0, 0, 1)  # PRM800K's -1
    with pytest.raises(RowError, match="labels: expected one per step"):
        parse_step_row({**row, "labels": [1]}, "x")
    with pytest.raises(RowError, match=r"labels\[1\]: 0.5 is not a step label"):
        parse_step_row({**row, "labels": [1, 0.5, 1, 1]}, "x")
    with pytest.raises(RowError, match="steps: expected a non-empty list"):
        parse_step_row({**row, "steps": []}, "x")


def test_each_steps_label_sits_at_its_separator_token(trained_prm):
    from rewardserve.training.steps import IGNORED, StepDataset

    fmt = load_input_format(trained_prm)
    encoder = SequenceEncoder(Tokenizer.from_file(str(trained_prm / "tokenizer.json")), fmt)
    (token_id,) = encoder.tokenizer.encode(SEPARATOR, add_special_tokens=False).ids
    example = StepExample("\n\nHuman: 2 + 2?\n\nAssistant:", ("Two plus two.", "Is four."), (1, 0), "x")
    ((sequence, labels),) = StepDataset(encoder, [example], SEPARATOR, token_id).items
    at = np.flatnonzero(labels != IGNORED)
    assert (sequence.ids[at] == token_id).all() and labels[at].tolist() == [1, 0]
    assert (sequence.ids == token_id).sum() == 2  # the separator is one token, never split


def test_a_trained_prm_exports_and_serves_step_rewards(trained_prm, step_rows, tmp_path):
    bundle = tmp_path / "bundle"
    assert main(["export", str(trained_prm), "--out", str(bundle), "--step-separator", SEPARATOR]) == 0
    manifest = load_bundle(bundle)
    assert manifest.outputs.steps.separator == SEPARATOR
    assert manifest.reference.by_output["step_rewards"] <= 1e-4  # transformers' softmax at each separator
    examples, _ = load_step_examples([step_rows])
    examples = [e for e in examples if len(e.prompt) + sum(map(len, e.steps)) < 600][:8]  # within 256 tokens
    items = [{"prompt": e.prompt, "steps": list(e.steps)} for e in examples]
    with running(Settings(bundle=bundle, port=free_port())) as server:
        answer = httpx.post(f"{server.url}/score", json={"items": items}, timeout=60).json()
    assert [len(steps) for steps in answer["steps"]] == [len(e.steps) for e in examples]


def test_lora_trains_adapters_the_head_and_the_added_separator_then_merges(tiny_base_model, step_rows, tmp_path):
    argv = ["train", "--base-model", str(tiny_base_model), "--data", str(step_rows), "--out", str(tmp_path)]
    argv += ["--step-separator", SEPARATOR, "--max-steps", "3", "--batch-size", "4", "--max-length", "256"]
    assert main([*argv, "--lora-r", "4", "--learning-rate", "1e-2", "--checkpoint-steps", "0"]) == 0
    after = load_file(tmp_path / "model.safetensors")
    base = load_file(tiny_base_model / "model.safetensors")
    plain = AutoModelForTokenClassification.from_pretrained(tmp_path).state_dict()
    assert set(after) == set(plain)  # merged: a plain token classifier, no adapter weights
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(after[query], base[query])  # adapters, merged in
    norm = "bert.encoder.layer.0.output.LayerNorm.weight"
    assert torch.equal(after[norm], base[norm])  # not a linear layer: frozen
    embeddings, base_embeddings = (w["bert.embeddings.word_embeddings.weight"] for w in (after, base))
    (separator,) = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(SEPARATOR, add_special_tokens=False).ids
    assert separator == len(base_embeddings)  # added by this run
    assert torch.equal(embeddings[:separator], base_embeddings)  # frozen
    # The separator's row, where every label is read, moved from where the base's rows put it.
    assert not torch.allclose(embeddings[separator], base_embeddings.mean(0), atol=1e-3)
    assert json.loads((tmp_path / "training_metrics.json").read_text())["lora_r"] == 4
