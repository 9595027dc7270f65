"""Training hyper-parameters: one dataclass whose fields carry their help text (torch-free, so
the command line is built from it without importing torch), and the one mapping from it to
`transformers.TrainingArguments` (`TrainConfig.training_arguments`).

The mapping is written for transformers 5 (pyproject allows 5.x only): there `warmup_steps`
below 1 is a share of the steps, and activation checkpointing got its own name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from transformers import TrainingArguments

LossName = Literal["bt", "margin", "instructgpt", "plackett_luce"]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)
Pooling = Literal["auto", "response_mean", "mean", "model"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


@dataclass
class TrainConfig:
    """Hyper-parameters of `rewardserve train`; the defaults build the default bundle."""

    base_model: str = field(metadata={"help": "Local HF checkpoint directory to fine-tune."})
    output_dir: str = field(metadata={"help": "Where the trained checkpoint is written."})
    loss: str = field(
        default="bt", metadata={"help": f"Training loss: {', '.join(LOSS_NAMES)}.", "choices": LOSS_NAMES}
    )
    centering: float = field(
        default=0.0, metadata={"help": "Weight c of the reward-centering term c*mean((r_better + r_worse)^2)."}
    )
    max_length: int = field(default=256, metadata={"help": "Max tokens per sequence (prompt cut from the left)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    batch_size: int = field(
        default=16, metadata={"help": "Examples (pairs or ranked prompts) per optimiser step, over all processes."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training data (one: RMs overfit after it)."})
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of steps with linear warm-up, then linear decay."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: epochs decide)."})
    checkpoint_steps: int = field(
        default=100,
        metadata={
            "help": "Every N steps: evaluate on the validation split and save a resumable checkpoint; "
            "the best by validation accuracy is kept (0: only at the end)."
        },
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto",
        metadata={
            "help": "Mixed precision; auto: bf16 on GPUs that support it, else fp32.",
            "choices": ("auto", "fp32", "bf16", "fp16"),
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    pooling: Pooling = field(
        default="auto",
        metadata={
            "help": "Reward head input: the mean of the last hidden states over the response's "
            "tokens or over all tokens, or the checkpoint's own sequence-classification head "
            "(BERT's [CLS] pooler, a decoder's last token); auto: response_mean for encoders "
            "with segment ids, the model's head otherwise.",
            "choices": POOLINGS,
        },
    )
    padding_side: Literal["right", "left"] = field(
        default="right", metadata={"help": "Padding side of batches.", "choices": ("right", "left")}
    )
    lora_r: int = field(
        default=0, metadata={"help": "LoRA rank (0: full fine-tuning); the reward head is always trained fully."}
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha."})
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Zero all dropout: chosen and rejected are scored by the same network, "
            "and training runs ~2.5x faster on CPU (attention dropout blocks fused kernels)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for initialisation and data order."})
    objectives: str = field(
        default="",
        metadata={
            "help": "Several rewards, one head each on a shared model: comma-separated NAME=SOURCE[+SOURCE...] "
            "(or SOURCE alone, its own name), a source being a data file's name (helpful-base for "
            "helpful-base-test.jsonl.gz); each head learns from its sources' pairs with the loss above. Export "
            "then asks for --reward-weights or --reward-objective. Empty: one reward for all data."
        },
    )
    step_separator: str = field(
        default="",
        metadata={
            "help": "Train a process reward model instead: the data are {prompt, steps, labels} rows, each step "
            "written followed by this separator (e.g. '<extra_0>'), a two-class token classifier learning each "
            "step's label at its separator. Export it with the same --step-separator."
        },
    )

    def objective_sources(self) -> dict[str, list[str]]:
        """{objective: the data sources whose pairs train it}, in the order given."""
        objectives: dict[str, list[str]] = {}
        for item in filter(None, (part.strip() for part in self.objectives.split(","))):
            name, _, sources = item.partition("=")
            objectives[name.strip()] = [s.strip() for s in (sources or name).split("+") if s.strip()]
        if len(objectives) == 1:
            raise ValueError("--objectives: name two or more (one objective is the plain reward)")
        return objectives

    def training_arguments(self, evaluate: bool) -> TrainingArguments:
        """The Trainer's arguments for this run (`evaluate`: there is a validation set). Every
        field of the Trainer's own that we set is set here; `loss`, `centering`, `pooling`,
        `lora_*`, `disable_dropout`, `padding_side` and `max_length` are ours (trainer.py)."""
        import torch
        from transformers import TrainingArguments

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        per_step = world_size * self.gradient_accumulation_steps
        if self.batch_size % per_step:
            raise ValueError(f"batch size {self.batch_size} must divide by processes x accumulation steps ({per_step})")
        every = self.checkpoint_steps
        cpu = not torch.cuda.is_available()
        return TrainingArguments(
            output_dir=str(Path(self.output_dir) / "trainer"),
            per_device_train_batch_size=self.batch_size // per_step,
            per_device_eval_batch_size=max(1, 2 * self.batch_size // per_step),
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            learning_rate=self.learning_rate,
            warmup_steps=self.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
            weight_decay=self.weight_decay,
            lr_scheduler_type="linear",
            seed=self.seed,
            **{_checkpointing_field(): self.gradient_checkpointing},
            logging_steps=10,
            report_to=["tensorboard"],  # event files under <out>/trainer/runs
            eval_strategy="steps" if evaluate and every else "no",
            eval_steps=every or None,
            save_strategy="steps" if every else "no",
            save_steps=every or None,
            save_total_limit=2,
            load_best_model_at_end=bool(evaluate and every),
            metric_for_best_model="accuracy",
            greater_is_better=True,
            label_names=["ranks"],
            remove_unused_columns=False,
            use_cpu=cpu,
            ddp_backend="gloo" if world_size > 1 and cpu else None,
            **_precision_flags(self.precision),
        )


def _precision_flags(precision: str) -> dict[str, bool]:
    import torch

    if precision == "auto":
        # bf16 autocast is slower than fp32 on CPUs (measured on this project's 2-core machines).
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def _checkpointing_field() -> str:
    # transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name
    # stays as a deprecated alias until 6); take the name this version has.
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
