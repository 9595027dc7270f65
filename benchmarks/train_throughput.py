"""Training throughput, side by side: rewardserve's trainer and TRL's RewardTrainer on the same
HH pairs, same base model, batch size and max length.

    python benchmarks/train_throughput.py --trl-python /path/to/venv-with-trl/bin/python

Prints pairs/s for each (pairs trained / seconds inside `Trainer.train`) and the ratio. TRL drops
pairs longer than max_length; rewardserve truncates them and keeps all.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
from pathlib import Path

from rewardserve.data.hh import default_training_files
from rewardserve.data.preferences import load_preferences
from rewardserve.training.cli import default_base_model
from rewardserve.training.config import TrainConfig
from rewardserve.training.trainer import train_reward_model

BASELINE = Path(__file__).with_name("trl_reward_baseline.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=320, help="random HH train pairs both trainers see")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--trl-python", help="python of a venv with trl installed (skip TRL when absent)")
    args = parser.parse_args()

    examples, _ = load_preferences(default_training_files(), split="train")
    examples = random.Random(0).sample(examples, args.pairs)
    base = default_base_model()
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            base_model=str(base),
            output_dir=tmp,
            max_length=args.max_length,
            batch_size=args.batch_size,
            checkpoint_steps=0,
        )
        ours = train_reward_model(config, examples, [], provenance={})
        print(
            f"rewardserve: {len(examples)} pairs kept, {ours['train_seconds']} s, {ours['examples_per_second']} pairs/s"
        )
        if not args.trl_python:
            return
        pairs = Path(tmp) / "pairs.jsonl"
        rows = [{"prompt": e.prompt, "chosen": e.responses[0], "rejected": e.responses[1]} for e in examples]
        pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
        command = [args.trl_python, str(BASELINE), "--pairs", str(pairs), "--base-model", str(base)]
        command += ["--max-length", str(args.max_length), "--batch-size", str(args.batch_size)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        trl = json.loads(output.strip().splitlines()[-1])
    trl_rate = trl["kept"] / trl["seconds"]
    print(
        f"TRL RewardTrainer: {trl['kept']} of {trl['pairs']} pairs kept, {trl['seconds']:.1f} s, {trl_rate:.2f} pairs/s"
    )
    print(f"ratio: {ours['examples_per_second'] / trl_rate:.2f}x TRL's pairs/s, keeping every pair")


if __name__ == "__main__":
    main()
