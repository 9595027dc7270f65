"""Bradley-Terry reward-model training on top of `transformers.Trainer`.

Only the loss and the sampler are overridden; the loop, schedules, accumulation and
multi-process training are the Trainer's. Batches are built by the bundle's `PairEncoder`, the
same code the server uses, with the chosen responses in the first half of every batch and the
rejected ones in the second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from rewardserve.bundle import EncodedPair, PairEncoder
from rewardserve.training.checkpoint import (
    TOKENIZER_FILE,
    copy_tokenizer,
    derive_input_format,
    save_input_format,
)
from rewardserve.training.config import TrainConfig
from rewardserve.training.data import PreferencePair
from rewardserve.training.losses import bradley_terry_loss


class PairDataset(torch.utils.data.Dataset):
    """Preference pairs, tokenized once up front."""

    def __init__(self, encoder: PairEncoder, pairs: Sequence[PreferencePair]) -> None:
        prompts = [p.prompt for p in pairs]
        self.chosen = encoder.encode(prompts, [p.chosen for p in pairs])
        self.rejected = encoder.encode(prompts, [p.rejected for p in pairs])
        # The collator pads chosen and rejected together: the pair's cost is its longer side.
        self.lengths = [max(len(c), len(r)) for c, r in zip(self.chosen, self.rejected, strict=True)]

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> dict[str, EncodedPair]:
        return {"chosen": self.chosen[index], "rejected": self.rejected[index]}


class PairCollator:
    """Pads a list of pairs into one batch: chosen rows first, then rejected rows."""

    def __init__(self, encoder: PairEncoder) -> None:
        self.encoder = encoder

    def __call__(self, features: list[dict[str, EncodedPair]]) -> dict[str, torch.Tensor]:
        sequences = [f["chosen"] for f in features] + [f["rejected"] for f in features]
        batch = self.encoder.pad(sequences)
        return {name: torch.from_numpy(array) for name, array in batch.arrays.items()}


class RewardTrainer(Trainer):
    """`Trainer` with the Bradley-Terry pairwise loss and length-grouped batches."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards = model(**inputs).logits.squeeze(-1)
        chosen, rejected = rewards.chunk(2)
        loss = bradley_terry_loss(chosen, rejected)
        if return_outputs:
            return loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}
        return loss

    def _get_train_sampler(self, train_dataset=None):
        # Grouping pairs of similar length keeps padding (wasted compute) small.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=dataset.lengths,
        )


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def train_reward_model(config: TrainConfig, pairs: Sequence[PreferencePair], provenance: dict) -> dict:
    """Fine-tune `config.base_model` on `pairs`; write an HF checkpoint with its input format.

    Returns the training metrics that are also written to `training_metrics.json`.
    """
    base = Path(config.base_model)
    out = Path(config.output_dir)
    fmt = derive_input_format(base, config.max_length)
    encoder = PairEncoder.from_file(base / TOKENIZER_FILE, fmt)
    dataset = PairDataset(encoder, pairs)

    torch.manual_seed(config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    if config.disable_dropout:
        disable_dropout(model)
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, data_collator=PairCollator(encoder))
    started = time.perf_counter()
    result = trainer.train()
    metrics = {
        "train_pairs": len(dataset),
        "train_loss": result.training_loss,
        "train_seconds": round(time.perf_counter() - started, 1),
        "steps": result.global_step,
        "config": asdict(config),
    }
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        trainer.save_model(str(out))
        copy_tokenizer(base, out)
        save_input_format(out, fmt)
        (out / "training_metrics.json").write_text(json.dumps({**metrics, **provenance}, indent=2) + "\n")
    return metrics
