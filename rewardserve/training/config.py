"""Training hyper-parameters: one dataclass whose fields carry their help text (torch-free, so
the command line is built from it without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    """Hyper-parameters of `rewardserve train`; the defaults build the default bundle."""

    base_model: str = field(metadata={"help": "Local HF checkpoint directory to fine-tune."})
    output_dir: str = field(metadata={"help": "Where the trained checkpoint is written."})
    max_length: int = field(default=256, metadata={"help": "Max tokens per sequence (prompt cut from the left)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    batch_size: int = field(default=16, metadata={"help": "Preference pairs per optimiser step."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training pairs."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps with linear warm-up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: epochs decide)."})
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Zero all dropout: chosen and rejected are scored by the same network, "
            "and training runs ~2.5x faster on CPU (attention dropout blocks fused kernels)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for initialisation and data order."})
