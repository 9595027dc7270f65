"""Reward-model training on top of `transformers.Trainer`.

Only the loss, the sampler and the evaluation step are overridden; the loop, schedules,
accumulation, mixed precision, checkpoints and multi-process training (torchrun, accelerate,
DeepSpeed/FSDP configs) are the Trainer's. Batches are built by the bundle's `SequenceEncoder`,
the same code the server uses. A batch holds whole examples: all K responses of a ranked
prompt are scored together, so the K-wise losses see every pair of one prompt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoTokenizer,
    EvalPrediction,
    Trainer,
    TrainerCallback,
)
from transformers.trainer_utils import get_last_checkpoint

from rewardserve.bundle import EncodedSequence, SequenceEncoder
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.metrics import fit_temperature, preference_metrics
from rewardserve.training.checkpoint import (
    METRICS_FILE,
    STATS_FILE,
    derive_input_format,
    ensure_pad_token,
    is_pair_encoder,
    save_input_format,
    uses_segment_ids,
)
from rewardserve.training.config import TrainConfig
from rewardserve.training.losses import ranked_pairs, reward_loss
from rewardserve.training.reward_model import MeanPooledRewardModel, new_reward_model, resolve_pooling

LOG_FILE = "metrics.jsonl"


class ExampleDataset(torch.utils.data.Dataset):
    """Examples tokenized once up front; item i is example i's encoded responses and ranks, and
    the objective (the head) its ranks are about: its source's in `objectives`, else 0."""

    def __init__(
        self,
        encoder: SequenceEncoder,
        examples: Sequence[PreferenceExample],
        objectives: dict[str, list[str]] | None = None,
    ) -> None:
        head_of = {source: i for i, sources in enumerate((objectives or {}).values()) for source in sources}
        if head_of and (stray := sorted({e.source for e in examples} - head_of.keys())):
            raise ValueError(f"--objectives: no objective takes the examples of {', '.join(stray)}")
        self.objectives = [head_of.get(e.source, 0) for e in examples]
        inputs = [pair for e in examples for pair in e.model_inputs(encoder.format.layout)]
        encoded = iter(encoder.encode([p for p, _ in inputs], [r for _, r in inputs]))
        self.sequences = [[next(encoded) for _ in e.responses] for e in examples]
        self.ranks = [e.ranks for e in examples]
        self.margins = [e.margin for e in examples]
        # A collated batch is padded to its longest sequence: an example costs its longest one.
        self.lengths = [max(map(len, seqs)) for seqs in self.sequences]
        flat = [s for seqs in self.sequences for s in seqs]
        self.truncated = sum(s.prompt_cut > 0 or s.response_cut > 0 for s in flat)
        self.responses_cut = sum(s.response_cut > 0 for s in flat)
        self.sequence_count = len(flat)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict:
        return {
            "sequences": self.sequences[index],
            "ranks": self.ranks[index],
            "margin": self.margins[index],
            "objective": self.objectives[index],
        }

    def truncation_summary(self) -> str:
        return (
            f"{self.truncated} of {self.sequence_count} sequences truncated (prompt cut from the left), "
            f"{self.responses_cut} of them with the response cut too"
        )


class ExampleCollator:
    """Pads a list of examples into one batch.

    Besides the model inputs: `layout` (G, K) indexes each example's responses in the batch
    rows (-1: empty slot), `ranks` (G, K) their ranks (-1: empty), `margins` (G,) and
    `objectives` (G,), the head each example trains.
    """

    def __init__(self, encoder: SequenceEncoder) -> None:
        self.encoder = encoder

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        sequences: list[EncodedSequence] = [s for f in features for s in f["sequences"]]
        width = max(len(f["sequences"]) for f in features)
        layout = torch.full((len(features), width), -1, dtype=torch.long)
        ranks = torch.full((len(features), width), -1, dtype=torch.long)
        row = 0
        for g, f in enumerate(features):
            k = len(f["sequences"])
            layout[g, :k] = torch.arange(row, row + k)
            ranks[g, :k] = torch.tensor(f["ranks"])
            row += k
        batch = {name: torch.from_numpy(array) for name, array in self.encoder.pad(sequences).arrays.items()}
        margins = [f["margin"] for f in features]
        batch["margins"] = torch.tensor([0.0 if m is None else m for m in margins])
        batch["layout"], batch["ranks"] = layout, ranks
        batch["objectives"] = torch.tensor([f["objective"] for f in features])
        return batch


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Random order, but each global batch holds examples of similar length, so padding (wasted
    compute) stays small. Seeded by (seed, epoch) alone, so a resumed run and every process of a
    distributed run see the same order; grouping uses the global batch, which processes then
    split, so 1 and N processes train on the same batches."""

    def __init__(self, lengths: Sequence[int], global_batch: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.global_batch = global_batch
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        window = self.global_batch * 50
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.global_batch] for i in range(0, len(chunk), self.global_batch)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[b].tolist()


def pair_gaps(rewards: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """r_better - r_worse of every ranked pair in (G, K) grids."""
    pairs = ranked_pairs(torch.from_numpy(ranks)).numpy()
    g, i, j = np.nonzero(pairs)
    return rewards[g, i] - rewards[g, j]


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    return preference_metrics(pair_gaps(prediction.predictions, prediction.label_ids)).as_dict()


class RewardTrainer(Trainer):
    """`Trainer` with a reward loss over (G, K) reward grids and length-grouped batches."""

    def __init__(self, *args, loss_name: str, centering: float, global_batch: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_name, self.centering, self.global_batch = loss_name, centering, global_batch
        self.loss_is_scaled_for_ga = False  # our losses are means: the Trainer divides by accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        layout, ranks, margins = inputs.pop("layout"), inputs.pop("ranks"), inputs.pop("margins")
        objectives = inputs.pop("objectives")
        logits = model(**inputs).logits.float()  # (rows, objectives)
        # Each example's responses are scored by its own objective's head.
        grid = logits[layout.clamp(min=0), objectives[:, None].expand_as(layout)]
        loss = reward_loss(self.loss_name, grid, ranks, margins, self.centering)
        return (loss, {"rewards": grid}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        return loss.detach(), outputs["rewards"].detach(), inputs["ranks"]

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(dataset.lengths, self.global_batch, self.args.seed)

    def _get_eval_sampler(self, eval_dataset):
        # Length order: evaluation batches need almost no padding.
        return np.argsort(eval_dataset.lengths, kind="stable").tolist()


class JsonlLogger(TrainerCallback):
    """Every logged metric (loss, learning rate, evaluation) as one JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def apply_lora(
    model: torch.nn.Module, config: TrainConfig, task_type: str = "SEQ_CLS", trained_tokens: Sequence[int] = ()
) -> torch.nn.Module:
    """LoRA adapters on every linear layer of the transformer; the reward head is trained fully.
    `task_type` is peft's (SEQ_CLS, TOKEN_CLS): it puts the model's head (`classifier`/`score`)
    in modules_to_save. `trained_tokens`: ids whose embedding rows are trained too (a PRM's step
    separator, where every label is read: added by this run, or a reserved token such as Qwen's
    `<extra_0>` whose row pretraining never trained; adapters alone would leave it as it is)."""
    from peft import LoraConfig, get_peft_model

    adapters = dict(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear")
    if isinstance(model, MeanPooledRewardModel):
        # The head lives outside the adapted backbone, so it stays fully trainable.
        model.backbone = get_peft_model(model.backbone, LoraConfig(**adapters))
        return model
    # peft keeps the head out of "all-linear" for SEQ_CLS only: name it, or a token classifier's
    # head would get adapters as well as a full copy.
    head = ["classifier", "score"]
    tokens = list(trained_tokens) or None
    lora = LoraConfig(task_type=task_type, exclude_modules=head, trainable_token_indices=tokens, **adapters)
    return get_peft_model(model, lora)


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The adapters folded into the weights: a plain checkpoint that export can read."""
    if isinstance(model, MeanPooledRewardModel):
        model.backbone = model.backbone.merge_and_unload()
        return model
    return model.merge_and_unload()


def _datasets(
    config: TrainConfig,
    encoder: SequenceEncoder,
    train_examples: Sequence[PreferenceExample],
    validation_examples: Sequence[PreferenceExample],
    objectives: dict[str, list[str]],
) -> tuple[ExampleDataset, ExampleDataset | None]:
    """The training and validation sets, encoded as the bundle will encode requests."""
    if config.loss == "margin" and any(e.margin is None for e in train_examples):
        raise ValueError("--loss margin needs a `margin` or `preference_strength` on every training row")
    train_set = ExampleDataset(encoder, train_examples, objectives)
    validation_set = ExampleDataset(encoder, validation_examples, objectives) if validation_examples else None
    print(f"training data: {train_set.truncation_summary()}")
    return train_set, validation_set


def _resumed_from(output_dir: str) -> str | None:
    """The last checkpoint in `output_dir`, to resume from; None (and a word) when there is none."""
    checkpoint = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if checkpoint is None:
        print(f"no checkpoint to resume from in {output_dir}; starting afresh")
    return checkpoint


def train_reward_model(
    config: TrainConfig,
    train_examples: Sequence[PreferenceExample],
    validation_examples: Sequence[PreferenceExample],
    provenance: dict,
    resume: bool = False,
    chat_template: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict:
    """Fine-tune `config.base_model`; write an HF checkpoint with its input format, reward
    statistics and calibration temperature. Returns the metrics also written to
    `training_metrics.json`."""
    out = Path(config.output_dir)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    segment_ids = uses_segment_ids(AutoConfig.from_pretrained(config.base_model))
    objectives = config.objective_sources()
    model = new_reward_model(
        config.base_model, resolve_pooling(config.pooling, is_pair_encoder(tokenizer), segment_ids), list(objectives)
    )
    pad_added = ensure_pad_token(tokenizer, model)
    if chat_template:
        # Saved with the checkpoint, so its users render conversations as training did (a
        # decoder then trains on the chat layout: apply_chat_template's ids, read at the end).
        tokenizer.chat_template = chat_template
    fmt = derive_input_format(tokenizer, model.config, config.max_length, config.padding_side)
    encoder = SequenceEncoder(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), fmt)
    train_set, validation_set = _datasets(config, encoder, train_examples, validation_examples, objectives)
    if config.disable_dropout:
        disable_dropout(model)
    if config.lora_r:
        model = apply_lora(model, config)
    args = config.training_arguments(evaluate=validation_set is not None)
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=ExampleCollator(encoder),
        compute_metrics=compute_metrics,
        callbacks=[JsonlLogger(out / LOG_FILE), *callbacks],
        loss_name=config.loss,
        centering=config.centering,
        global_batch=config.batch_size,
    )
    checkpoint = _resumed_from(args.output_dir) if resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = _run_metrics(config, len(train_set), result, time.perf_counter() - started, checkpoint, pad_added)
    stats = {}
    if validation_set is not None:
        stats = _reward_stats(trainer, validation_set)
        metrics["validation"] = stats.pop("validation")
        metrics["best_checkpoint"] = trainer.state.best_model_checkpoint
    if trainer.is_world_process_zero():
        _save(trainer, config, tokenizer, fmt, stats, {**metrics, **provenance})
    return metrics


def _run_metrics(
    config: TrainConfig, examples: int, result, seconds: float, resumed: str | None, pad_added: bool
) -> dict:
    return {
        "train_examples": examples,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 1),
        # Only a whole run from step 0 has a meaningful rate.
        "examples_per_second": round(examples * config.epochs / seconds, 2)
        if config.max_steps < 0 and resumed is None
        else None,
        "steps": result.global_step,
        "resumed_from": resumed,
        "pad_token_added": pad_added,
        "config": asdict(config),
    }


def _save(trainer: RewardTrainer, config: TrainConfig, tokenizer, fmt, stats: dict, metrics: dict) -> None:
    """The checkpoint: weights (LoRA merged), tokenizer, reward statistics, metrics, input format."""
    out = Path(config.output_dir)
    model = merge_lora(trainer.model) if config.lora_r else trainer.model
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    save_input_format(out, fmt)  # last: its presence marks a finished run


def _reward_stats(trainer: RewardTrainer, validation_set: ExampleDataset) -> dict:
    """Reward mean/std (for normalisation) and the calibration temperature fitted on validation
    pairs, with the validation metrics before and after calibration."""
    prediction = trainer.predict(validation_set)
    rewards, ranks = prediction.predictions, prediction.label_ids
    gaps = pair_gaps(rewards, ranks)
    temperature = fit_temperature(gaps)
    real = rewards[ranks >= 0]
    return {
        "reward_mean": float(real.mean()),
        "reward_std": float(real.std()),
        "calibration_temperature": temperature,
        "fitted_on": f"validation split, {len(gaps)} pairs",
        "validation": {
            "uncalibrated": preference_metrics(gaps).as_dict(),
            "calibrated": preference_metrics(gaps, temperature).as_dict(),
        },
    }
