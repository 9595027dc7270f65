"""Training hyper-parameters: one dataclass whose fields carry their help text (torch-free, so
the command line is built from it without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

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
