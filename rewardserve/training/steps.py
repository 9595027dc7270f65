"""Process reward model training: step-labelled rows -> a token-classification checkpoint that
`rewardserve export --step-separator` serves with step rewards.

Each response is written as the server writes it, every step followed by the separator
(`bundle/outputs.join_steps`), and encoded with the same input format; the label of step k sits
at the k-th separator token of the response, every other position is ignored (-100). The loss
is transformers' token-classification cross-entropy over two classes (not good, good) at those
positions: the binary cross-entropy of each step's label, on the logit difference. Class 1's
softmax probability at the separator is then the step's reward, as Qwen2.5-Math-PRM reads it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForTokenClassification, AutoTokenizer, EvalPrediction, Trainer

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.bundle.outputs import join_steps, step_positions
from rewardserve.data.steps import StepExample
from rewardserve.training.checkpoint import METRICS_FILE, derive_input_format, ensure_pad_token, save_input_format
from rewardserve.training.config import TrainConfig
from rewardserve.training.trainer import LOG_FILE, JsonlLogger, apply_lora, disable_dropout, merge_lora

IGNORED = -100  # transformers' ignore_index


class StepDataset(torch.utils.data.Dataset):
    """Step examples encoded once, with each step's label at its separator token. Examples whose
    steps do not all survive truncation are left out (and counted)."""

    def __init__(
        self, encoder: SequenceEncoder, examples: Sequence[StepExample], separator: str, token_id: int
    ) -> None:
        prompts = [e.prompt for e in examples]
        responses = [join_steps(e.steps, separator) for e in examples]
        if encoder.format.layout == "chat":
            responses = [[{"role": "assistant", "content": r}] for r in responses]
        self.items: list[tuple[EncodedSequence, np.ndarray]] = []
        self.dropped = 0
        for example, sequence in zip(examples, encoder.encode(prompts, responses), strict=True):
            positions = step_positions(sequence.ids, token_id, sequence.response_start)
            if len(positions) != len(example.labels):
                self.dropped += 1  # truncation cut steps off
                continue
            labels = np.full(len(sequence), IGNORED, dtype=np.int64)
            labels[positions] = example.labels
            self.items.append((sequence, labels))
        self.lengths = [len(sequence) for sequence, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[EncodedSequence, np.ndarray]:
        return self.items[index]


class StepCollator:
    """Pads sequences with the encoder (the model's inputs) and their labels alike."""

    def __init__(self, encoder: SequenceEncoder) -> None:
        self.encoder = encoder

    def __call__(self, items: list[tuple[EncodedSequence, np.ndarray]]) -> dict[str, torch.Tensor]:
        sequences = [sequence for sequence, _ in items]
        batch = {name: torch.from_numpy(a) for name, a in self.encoder.pad(sequences).arrays.items()}
        width = batch["input_ids"].shape[1]
        labels = torch.full((len(items), width), IGNORED, dtype=torch.long)
        for row, (sequence, row_labels) in enumerate(items):
            start = width - len(sequence) if self.encoder.format.padding_side == "left" else 0
            labels[row, start : start + len(sequence)] = torch.from_numpy(row_labels)
        batch["labels"] = labels
        return batch


def step_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy of the step labels (reward above one half for a good step), over labelled steps."""
    logits, labels = prediction.predictions, prediction.label_ids
    labelled = labels != IGNORED
    predicted = logits.argmax(-1)
    return {"step_accuracy": float((predicted[labelled] == labels[labelled]).mean()), "steps": int(labelled.sum())}


def train_process_reward_model(
    config: TrainConfig,
    train_examples: Sequence[StepExample],
    validation_examples: Sequence[StepExample],
    provenance: dict,
    chat_template: str | None = None,
) -> dict:
    """Fine-tune `config.base_model` as a two-class token classifier read at
    `config.step_separator`; write the checkpoint with its input format."""
    separator = config.step_separator
    out = Path(config.output_dir)
    torch.manual_seed(config.seed)
    tokenizer, model, added = _step_classifier(config.base_model, separator)
    pad_added = ensure_pad_token(tokenizer, model)
    if added:
        model.resize_token_embeddings(len(tokenizer))
    if chat_template:
        tokenizer.chat_template = chat_template
    fmt = derive_input_format(tokenizer, model.config, config.max_length, config.padding_side)
    encoder = SequenceEncoder(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), fmt)
    (token_id,) = tokenizer.encode(separator, add_special_tokens=False)
    train_set = StepDataset(encoder, train_examples, separator, token_id)
    validation_set = StepDataset(encoder, validation_examples, separator, token_id) if validation_examples else None
    print(f"training data: {len(train_set)} step examples ({train_set.dropped} left out: steps cut by truncation)")
    if config.disable_dropout:
        disable_dropout(model)
    if config.lora_r:
        model = apply_lora(model, config, "TOKEN_CLS", [token_id])
    args = config.training_arguments(evaluate=validation_set is not None)
    args.label_names, args.metric_for_best_model = ["labels"], "step_accuracy"
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=StepCollator(encoder),
        compute_metrics=step_metrics,
        callbacks=[JsonlLogger(out / LOG_FILE)],
    )
    started = time.perf_counter()
    result = trainer.train()
    metrics = {
        "kind": "process reward model",
        "step_separator": separator,
        "train_examples": len(train_set),
        "train_loss": result.training_loss,
        "train_seconds": round(time.perf_counter() - started, 1),
        "steps": result.global_step,
        "pad_token_added": pad_added,
        "separator_token_added": bool(added),
        "lora_r": config.lora_r,
    }
    if validation_set is not None:
        metrics["validation"] = trainer.evaluate()
    if trainer.is_world_process_zero():
        (merge_lora(trainer.model) if config.lora_r else trainer.model).save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / METRICS_FILE).write_text(json.dumps({**metrics, **provenance}, indent=2) + "\n")
        save_input_format(out, fmt)  # last: its presence marks a finished run
    return metrics


def _step_classifier(base_model: str, separator: str) -> tuple[Any, Any, int]:
    """The tokenizer, with the separator added when it is not one token yet, and a new two-class
    token classifier on `base_model`; and how many tokens were added."""
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # The separator must be one token the layout never splits: an added (not special) token, so
    # that the pair layout, which splits special-token text in user input, keeps it whole too.
    added = tokenizer.add_tokens([separator]) if len(tokenizer.encode(separator, add_special_tokens=False)) != 1 else 0
    # A new two-class head: whatever head the base checkpoint has is not this one.
    model = AutoModelForTokenClassification.from_pretrained(
        base_model, id2label={0: "bad", 1: "good"}, label2id={"bad": 0, "good": 1}, ignore_mismatched_sizes=True
    )
    return tokenizer, model, added
