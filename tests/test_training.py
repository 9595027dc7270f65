"""The trainer: decoders and encoders, every loss, LoRA, resume and multi-process training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from rewardserve.bundle import SequenceEncoder, load_bundle
from rewardserve.data.hh import prompt_turns
from rewardserve.data.preferences import PreferenceExample
from rewardserve.training.checkpoint import (
    ADDED_PAD_TOKEN,
    STATS_FILE,
    derive_input_format,
    ensure_pad_token,
    load_input_format,
)
from rewardserve.training.config import TrainConfig
from rewardserve.training.reward_model import HEAD_WEIGHTS, load_reward_model, new_reward_model
from rewardserve.training.trainer import LOG_FILE, train_reward_model


def rewards_of(model, encoder: SequenceEncoder, pairs: list[tuple[str, str]], batched: bool) -> np.ndarray:
    sequences = encoder.encode([p for p, _ in pairs], [r for _, r in pairs])
    batches = [sequences] if batched else [[s] for s in sequences]
    with torch.inference_mode():
        out = [
            model(**{k: torch.from_numpy(v) for k, v in encoder.pad(b).arrays.items()}).logits[:, 0] for b in batches
        ]
    return torch.cat(out).numpy()


def test_decoders_get_a_real_pad_token_and_end_with_eos(tiny_decoder):
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_decoder, num_labels=1)
    assert ensure_pad_token(tokenizer, model)
    fmt = derive_input_format(tokenizer, model.config, max_length=128)
    assert tokenizer.convert_ids_to_tokens(fmt.pad_id) == ADDED_PAD_TOKEN
    assert fmt.pad_id != tokenizer.eos_token_id and model.config.pad_token_id == fmt.pad_id
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert fmt.suffix_ids == [tokenizer.eos_token_id] and fmt.position_ids


def test_a_decoder_reads_prompt_and_response_as_one_text_with_merges_across_the_join(tiny_decoder):
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_decoder, num_labels=1)
    ensure_pad_token(tokenizer, model)
    fmt = derive_input_format(tokenizer, model.config, max_length=128)
    encoder = SequenceEncoder.from_file(_save_tokenizer(tokenizer, tiny_decoder), fmt)
    prompt, response = "Can you tell me a joke? ", "Why did the chicken cross the road?"
    (sequence,) = encoder.encode([prompt], [response])
    # The byte-level BPE merges the prompt's last space into the response's first word.
    apart = tokenizer(prompt, add_special_tokens=False).input_ids
    assert tokenizer(prompt + response, add_special_tokens=False).input_ids[: len(apart)] != apart
    # What the model reads is what its users feed it: `prompt + response` tokenized in one piece.
    assert sequence.ids.tolist() == [*tokenizer(prompt + response).input_ids, tokenizer.eos_token_id]
    merged = tokenizer.convert_ids_to_tokens(int(sequence.ids[sequence.response_start]))
    assert merged.startswith("Ġ")  # the merged token counts as the response's


def test_left_and_right_padding_give_the_same_rewards_as_scoring_alone(tiny_decoder, heldout_pairs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_decoder, num_labels=1).eval()
    ensure_pad_token(tokenizer, model)
    with torch.no_grad():  # a random head whose rewards differ visibly between tokens
        model.score.weight.normal_(0, 1.0)
    pairs = [(e.prompt, r) for e in heldout_pairs[:6] for r in e.responses]  # mixed lengths
    rewards = {}
    for side in ("right", "left"):
        fmt = derive_input_format(tokenizer, model.config, max_length=96, padding_side=side)
        encoder = SequenceEncoder.from_file(_save_tokenizer(tokenizer, tiny_decoder), fmt)
        rewards[side] = rewards_of(model, encoder, pairs, batched=True)
        rewards["alone"] = rewards_of(model, encoder, pairs, batched=False)
    assert np.ptp(rewards["alone"]) > 1e-3  # the check below could not pass by accident
    np.testing.assert_allclose(rewards["right"], rewards["alone"], atol=1e-5)
    np.testing.assert_allclose(rewards["left"], rewards["alone"], atol=1e-5)


def _save_tokenizer(tokenizer, directory: Path) -> Path:
    out = directory / "with-pad"
    tokenizer.save_pretrained(out)
    return out / "tokenizer.json"


def test_response_mean_pooling_averages_the_response_tokens_alone(tiny_base_model, heldout_pairs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    torch.manual_seed(0)
    model = new_reward_model(tiny_base_model, "response_mean").eval()
    encoder = SequenceEncoder(
        Tokenizer.from_file(str(tiny_base_model / "tokenizer.json")), derive_input_format(tokenizer, model.config, 96)
    )
    pairs = [(e.prompt, e.responses[0]) for e in heldout_pairs[:4]]
    sequences = encoder.encode([p for p, _ in pairs], [r for _, r in pairs])
    batch = {k: torch.from_numpy(v) for k, v in encoder.pad(sequences).arrays.items()}
    with torch.inference_mode():
        hidden = model.backbone(**batch).last_hidden_state
        expected = [model.score(hidden[i, s.response_start : len(s)].mean(0)) for i, s in enumerate(sequences)]
        rewards = model(**batch).logits[:, 0]
    torch.testing.assert_close(rewards, torch.cat(expected), atol=1e-5, rtol=1e-5)


def config_for(base: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(max_length=96, batch_size=4, max_steps=2, learning_rate=1e-3, checkpoint_steps=0)
    return TrainConfig(base_model=str(base), output_dir=str(out), **{**settings, **overrides})


@pytest.mark.parametrize("pooling", ["auto", "mean"])
def test_a_decoder_trains_with_left_padding_into_a_checkpoint_export_can_read(
    pooling, tiny_decoder, train_pairs, heldout_pairs, tmp_path
):
    config = config_for(tiny_decoder, tmp_path, padding_side="left", pooling=pooling)
    metrics = train_reward_model(config, train_pairs[:16], heldout_pairs[:8], provenance={})
    assert metrics["pad_token_added"] and metrics["steps"] == 2
    fmt = load_input_format(tmp_path)
    assert fmt.padding_side == "left" and fmt.pad_id == AutoTokenizer.from_pretrained(tmp_path).pad_token_id
    model = load_reward_model(tmp_path)
    assert model.config.pad_token_id == fmt.pad_id
    expected = "MeanPooledRewardModel" if pooling == "mean" else "ForSequenceClassification"
    assert type(model).__name__.endswith(expected)


def test_a_decoder_with_a_chat_template_trains_on_the_ids_apply_chat_template_gives(
    train_pairs, heldout_pairs, tmp_path
):
    from rewardserve.testing.chat_models import QWEN3_TEMPLATE, build_chat_rm

    base = build_chat_rm("qwen3", tmp_path / "base", [e.prompt + r for e in train_pairs[:200] for r in e.responses])
    train_reward_model(config_for(base, tmp_path / "rm", max_length=512), train_pairs[:16], [], provenance={})
    fmt, tokenizer = load_input_format(tmp_path / "rm"), AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert fmt.layout == "chat" and tokenizer.chat_template == QWEN3_TEMPLATE
    encoder = SequenceEncoder.from_file(tmp_path / "rm" / "tokenizer.json", fmt)
    example = next(e for e in heldout_pairs if "\n\nAssistant:" in e.prompt and len(e.prompt) < 600)
    (prompt, response), _ = example.model_inputs("chat")
    (sequence,) = encoder.encode([prompt], [response])
    # An HH transcript reaches the model as its turns, rendered and tokenized as its users will.
    conversation = [*prompt_turns(example.prompt), {"role": "assistant", "content": example.responses[0]}]
    assert len(conversation) > 2
    assert sequence.ids.tolist() == tokenizer.apply_chat_template(conversation, return_dict=True)["input_ids"]


def ranked_examples(pairs: list[PreferenceExample], k: int = 3) -> list[PreferenceExample]:
    """K-wise examples from real pairs: chosen, rejected, then another prompt's response as worst."""
    out = []
    for i, e in enumerate(pairs):
        other = pairs[(i + 1) % len(pairs)].responses[1]
        responses = (*e.responses, other)[:k]
        out.append(PreferenceExample(e.prompt, responses, tuple(range(k)), e.source))
    return out


@pytest.mark.parametrize("loss", ["bt", "margin", "instructgpt", "plackett_luce"])
def test_every_loss_trains_on_pairs_and_ranked_prompts(loss, tiny_base_model, train_pairs, tmp_path):
    examples = ranked_examples(train_pairs[:12]) + [
        PreferenceExample.pair(e.prompt, *e.responses, e.source, margin=1.0) for e in train_pairs[12:20]
    ]
    if loss == "margin":  # margins belong to pairs
        examples = examples[12:]
    else:
        examples = [PreferenceExample(e.prompt, e.responses, e.ranks, e.source, 1.0) for e in examples]
    config = config_for(tiny_base_model, tmp_path, loss=loss, centering=0.01, max_steps=3)
    metrics = train_reward_model(config, examples, [], provenance={})
    assert np.isfinite(metrics["train_loss"]) and metrics["steps"] == 3


def test_training_evaluates_keeps_the_best_and_writes_calibration(
    tiny_base_model, train_pairs, heldout_pairs, tmp_path
):
    config = config_for(tiny_base_model, tmp_path, max_steps=4, checkpoint_steps=2)
    metrics = train_reward_model(config, train_pairs[:16], heldout_pairs[:16], provenance={})
    logged = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    evaluations = [entry for entry in logged if "eval_accuracy" in entry]
    assert [e["step"] for e in evaluations] == [2, 4]
    assert {"eval_mean_margin", "eval_log_loss", "eval_ece"} <= set(evaluations[0])
    best = max(evaluations, key=lambda e: e["eval_accuracy"])
    assert metrics["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert stats["calibration_temperature"] > 0 and stats["reward_std"] > 0
    # Calibration never makes the validation log loss worse: T = 1 is one of the candidates.
    validation = metrics["validation"]
    assert validation["calibrated"]["log_loss"] <= validation["uncalibrated"]["log_loss"] + 1e-9


def test_export_carries_the_reward_stats_into_the_manifest(tiny_checkpoint, tiny_bundle):
    stats = json.loads((tiny_checkpoint / STATS_FILE).read_text())
    manifest = load_bundle(tiny_bundle)
    assert manifest.calibration_temperature == stats["calibration_temperature"]
    assert (manifest.reward_mean, manifest.reward_std) == (stats["reward_mean"], stats["reward_std"])


def checkpoint_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every weight of a checkpoint; a mean-pooled head's as `score.*`."""
    weights = load_file(directory / "model.safetensors")
    if (directory / HEAD_WEIGHTS).is_file():
        weights |= {f"score.{k}": v for k, v in load_file(directory / HEAD_WEIGHTS).items()}
    return weights


@pytest.mark.parametrize(
    ("pooling", "head", "prefix"),
    [("response_mean", "score.weight", ""), ("mean", "score.weight", ""), ("model", "classifier.weight", "bert.")],
)
def test_lora_trains_adapters_and_the_full_head_then_merges(
    pooling, head, prefix, tiny_base_model, train_pairs, tmp_path
):
    config = config_for(tiny_base_model, tmp_path, lora_r=4, max_steps=3, pooling=pooling)
    train_reward_model(config, train_pairs[:12], [], provenance={})
    torch.manual_seed(config.seed)  # the head's initialisation, as training drew it
    before = {k: v.detach() for k, v in new_reward_model(tiny_base_model, pooling).state_dict().items()}
    before = {k.removeprefix("backbone."): v for k, v in before.items()}
    after = checkpoint_weights(tmp_path)
    assert set(after) == set(before)  # merged: a plain checkpoint, no adapter weights
    assert not torch.equal(after[head], before[head])
    query = f"{prefix}encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(after[query], before[query])
    embeddings = f"{prefix}embeddings.word_embeddings.weight"
    assert torch.equal(after[embeddings], before[embeddings])
    model = load_reward_model(tmp_path)
    expected = "BertForSequenceClassification" if pooling == "model" else "MeanPooledRewardModel"
    assert type(model).__name__ == expected


class Crash(TrainerCallback):
    """Kills the run at the start of a step, after the previous step's checkpoint was saved."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_base_model, train_pairs, tmp_path):
    pairs = train_pairs[:24]
    settings = dict(max_steps=6, checkpoint_steps=2)
    train_reward_model(config_for(tiny_base_model, tmp_path / "straight", **settings), pairs, [], provenance={})
    interrupted = config_for(tiny_base_model, tmp_path / "resumed", **settings)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_reward_model(interrupted, pairs, [], provenance={}, callbacks=[Crash(at_step=4)])
    metrics = train_reward_model(interrupted, pairs, [], provenance={}, resume=True)
    assert metrics["resumed_from"].endswith("checkpoint-4")
    straight = checkpoint_weights(tmp_path / "straight")
    resumed = checkpoint_weights(tmp_path / "resumed")
    assert set(resumed) == set(straight)
    for name, weight in straight.items():
        torch.testing.assert_close(resumed[name], weight, atol=1e-6, rtol=1e-5)
    base = load_file(tiny_base_model / "model.safetensors")
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(straight[query], base[f"bert.{query}"])


def test_two_torchrun_processes_train_the_same_model_as_one(tiny_base_model, train_pairs, heldout_pairs, tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": e.prompt, "chosen": e.responses[0], "rejected": e.responses[1]} for e in train_pairs[:96]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["train", "--base-model", str(tiny_base_model), "--data", str(data), "--max-length", "96"]
    args += ["--batch-size", "8", "--max-steps", "4", "--learning-rate", "1e-2", "--checkpoint-steps", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "rewardserve.cli", *args, "--out", str(tmp_path / "one")]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = [*torchrun, "-m", "rewardserve.cli", *args, "--out", str(tmp_path / "two")]
    for command in (one, two):
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)

    pairs = [(e.prompt, r) for e in heldout_pairs[:32] for r in e.responses]
    rewards = {}
    for name in ("one", "two"):
        model = load_reward_model(tmp_path / name).eval()
        encoder = SequenceEncoder.from_file(tmp_path / name / "tokenizer.json", load_input_format(tmp_path / name))
        rewards[name] = rewards_of(model, encoder, pairs, batched=True)
    torch.manual_seed(0)  # the head's initialisation, as training drew it
    untrained = rewards_of(new_reward_model(tiny_base_model, "response_mean").eval(), encoder, pairs, batched=True)
    moved = np.abs(rewards["one"] - untrained).max()
    assert moved > 1e-2
    np.testing.assert_allclose(rewards["two"], rewards["one"], atol=1e-3 * moved)
    heldout_accuracy = {name: np.mean(r[0::2] > r[1::2]) for name, r in rewards.items()}
    assert heldout_accuracy["two"] == heldout_accuracy["one"]


def test_warm_up_is_a_share_of_the_steps_under_the_transformers_the_package_allows(tmp_path):
    config = TrainConfig(base_model="unused", output_dir=str(tmp_path), warmup_ratio=0.1, gradient_checkpointing=True)
    args = config.training_arguments(evaluate=True)
    assert (args.get_warmup_steps(1000), args.get_warmup_steps(37)) == (100, 4)
    assert getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing
    assert args.per_device_train_batch_size == config.batch_size and args.eval_strategy == "steps"
