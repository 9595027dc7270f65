"""RewardBench's own scoring code on given rewards: run by the Python of the venv that holds the
`rewardbench` package (its pins fight ours), as `python rewardbench_reference.py < jobs.json`.

Each job: {"benchmark": "rewardbench2" | "rewardbench", "rows": the file's rows, "rewards": each
row's completions' rewards, correct first}. Each answer: {"subsets": {...}, "sections": {...}}.
The glue follows the benchmark's scripts step for step (`scripts/run_v2.py`, `scripts/run_rm.py`);
every rule is the package's own function.
"""

import json
import sys

import numpy as np
from datasets import Dataset
from rewardbench.constants import EXAMPLE_COUNTS, SUBSET_MAPPING
from rewardbench.utils import calculate_scores_per_section, process_single_model, reroll_and_score_dataset


def rewardbench2(rows, rewards):
    # run_v2.py: the completions unrolled one per row (load_bon_dataset_v2), scored, then rerolled
    unrolled = [
        {"text": text, "subset": row["subset"], "id": row["id"], "scores": score}
        for row, scores in zip(rows, rewards, strict=True)
        for text, score in zip(row["chosen"] + row["rejected"], scores, strict=True)
    ]
    out_dataset = reroll_and_score_dataset(
        Dataset.from_list(unrolled), [row["total_completions"] for row in rows], cols_to_combine=["text", "scores"]
    )
    out_dataset = out_dataset.add_column("num_correct", [row["num_correct"] for row in rows])
    results = {}
    for subset in np.unique([row["subset"] for row in rows]):
        subset_dataset = out_dataset.filter(lambda example, subset=subset: example["subset"] == subset)
        if subset.lower() == "ties":
            _, results[subset] = process_single_model(subset_dataset)
        else:
            results[subset] = sum(subset_dataset["results"]) / len(subset_dataset["results"])
    return {"subsets": {k: float(v) for k, v in results.items()}, "sections": {}}


def rewardbench(rows, rewards):
    # run_rm.py: a pair is right when chosen > rejected; then the sections' weighted means
    results = [1 if chosen > rejected else 0 for chosen, rejected in rewards]
    grouped = {}
    for subset in np.unique([row["subset"] for row in rows]):
        chosen = [r for row, r in zip(rows, results, strict=True) if row["subset"] == subset]
        grouped[subset] = sum(chosen) / len(chosen)
    sections = calculate_scores_per_section(EXAMPLE_COUNTS, SUBSET_MAPPING, grouped)
    return {"subsets": grouped, "sections": sections}


if __name__ == "__main__":
    answers = []
    for job in json.load(sys.stdin):
        score = rewardbench2 if job["benchmark"] == "rewardbench2" else rewardbench
        answers.append(score(job["rows"], job["rewards"]))
    json.dump(answers, sys.stdout)
