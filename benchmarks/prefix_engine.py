"""GRPO groups at the engine: G responses to one prompt scored as whole sequences, against the
prompt run once and every response read against its keys and values (decoder_graph.build with
prefix=True: GroupQueryAttention's past inputs), on the Qwen3-0.6B-shaped RM, fp32, onnxruntime.

    python benchmarks/prefix_engine.py          # ~20 min on 2 cores (the graphs are built once)

The whole sequences run as the server batches them (at most 2048 padded tokens a call); the
split side runs the prompt, then the G responses in one call on G copies of its keys and values.
Random token ids and weights: speed only (the rewards of both sides are checked equal, 1e-3).
Medians of 3 groups a setting; ratios taken side by side. This is the engine alone: the
batcher does not group responses by prompt yet (issue 22).

Measured with this script on an AMD EPYC (AVX-512-BF16), 2 cores, 2026-12-02 (responses of
100-300 tokens; an earlier run of the same method gave 1.80x, 2.56x and 2.60x):
    P=300  G=8:  whole 0.23 seq/s, prompt once 0.37 seq/s: 1.61x
    P=1000 G=8:  whole 0.10 seq/s, prompt once 0.26 seq/s: 2.48x
    P=1000 G=16: whole 0.10 seq/s, prompt once 0.25 seq/s: 2.50x
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from real_size_export import SHAPES
from transformers import AutoModelForSequenceClassification, Qwen3Config

from rewardserve.bundle import InputFormat
from rewardserve.bundle.runtime import OFFLINE_BATCH_TOKENS, session_options
from rewardserve.export import decoder_graph

FORMAT = InputFormat(
    prefix_ids=[], separator_ids=[], suffix_ids=[], pad_id=0, max_length=2048,
    token_type_ids=False, position_ids=True, layout="chat",
)  # fmt: skip


def graphs(work: Path) -> Path:
    """The whole, prompt and response graphs of a Qwen3-0.6B-shaped RM, built once."""
    if not (work / decoder_graph.RESPONSE_FILE).is_file():
        config = Qwen3Config(**SHAPES["qwen3-0.6b"][1], max_position_embeddings=4096, pad_token_id=0, num_labels=1)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config).eval()
        decoder_graph.build(model, FORMAT, work, prefix=True)
    return work


def padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def group(sessions: dict[str, ort.InferenceSession], prompt_length: int, size: int, rng) -> tuple[float, float]:
    """Seconds for one group: (whole sequences, prompt once)."""
    prompt = rng.integers(1, 32000, prompt_length)
    responses = [rng.integers(1, 32000, n) for n in rng.integers(100, 301, size)]
    ids, mask = padded([np.concatenate([prompt, r]) for r in responses])
    started = time.perf_counter()
    rows = max(1, OFFLINE_BATCH_TOKENS // ids.shape[1])
    whole = np.concatenate(
        [
            sessions["whole"].run(["reward"], {"input_ids": i, "attention_mask": m, "position_ids": np.zeros_like(i)})[
                0
            ]
            for i, m in ((ids[s : s + rows], mask[s : s + rows]) for s in range(0, size, rows))
        ]
    )
    whole_seconds = time.perf_counter() - started
    started = time.perf_counter()
    names = [output.name for output in sessions["prompt"].get_outputs()]
    present = sessions["prompt"].run(
        names, {"input_ids": prompt[None], "attention_mask": np.ones((1, prompt_length), np.int64)}
    )
    feeds = {
        name.replace("present", "past"): np.repeat(value, size, axis=0)
        for name, value in zip(names, present, strict=True)
    }
    ids, mask = padded(responses)
    feeds |= {"input_ids": ids, "attention_mask": mask, "prefix_lengths": np.full(size, prompt_length, np.int64)}
    split = sessions["response"].run(["reward"], feeds)[0]
    split_seconds = time.perf_counter() - started
    assert np.abs(whole - split).max() < 1e-3, "the split graphs' rewards differ from the whole sequences'"
    return whole_seconds, split_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("models/real-size/qwen3-0.6b/prefix-graphs"))
    parser.add_argument("--groups", type=int, default=3)
    args = parser.parse_args()
    work = graphs(args.work)
    files = {
        "whole": decoder_graph.GRAPH_FILE,
        "prompt": decoder_graph.PROMPT_FILE,
        "response": decoder_graph.RESPONSE_FILE,
    }
    sessions = {
        part: ort.InferenceSession(str(work / name), session_options(), providers=["CPUExecutionProvider"])
        for part, name in files.items()
    }
    for prompt_length, size in ((300, 8), (1000, 8), (1000, 16)):
        rng = np.random.default_rng(prompt_length + size)
        times = [group(sessions, prompt_length, size, rng) for _ in range(args.groups)]
        whole, split = (statistics.median(t[i] for t in times) for i in (0, 1))
        print(
            f"P={prompt_length} G={size}: whole {size / whole:.2f} seq/s, prompt once {size / split:.2f} seq/s: "
            f"{whole / split:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
