"""TRL's RewardTrainer on the same pairs, for `train_throughput.py` (runs in a venv with trl).

Prints one JSON line: pairs given, pairs TRL kept (it drops pairs over max_length), seconds.
"""

import argparse
import json
import tempfile

from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

parser = argparse.ArgumentParser()
parser.add_argument("--pairs", required=True)
parser.add_argument("--base-model", required=True)
parser.add_argument("--max-length", type=int, required=True)
parser.add_argument("--batch-size", type=int, required=True)
args = parser.parse_args()

with open(args.pairs) as f:
    rows = [json.loads(line) for line in f]
model = AutoModelForSequenceClassification.from_pretrained(args.base_model, num_labels=1)
tokenizer = AutoTokenizer.from_pretrained(args.base_model)
tokenizer.eos_token = tokenizer.eos_token or tokenizer.sep_token  # TRL appends an EOS; BERT's is [SEP]
with tempfile.TemporaryDirectory() as out:
    config = RewardConfig(
        output_dir=out,
        max_length=args.max_length,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    kept = len(trainer.train_dataset)
    result = trainer.train()
print(json.dumps({"pairs": len(rows), "kept": kept, "seconds": result.metrics["train_runtime"]}))
