"""GRPO groups at the engine: G responses to one prompt scored as whole sequences (model.onnx),
against the prompt run once through the prefix graph and every response read after its keys
and values (decoder_graph.build with prefix=True), on the Qwen3-0.6B-shaped RM, fp32,
onnxruntime; where a prompt is too short to be worth it (the threshold); and whole sequences
through the prefix graph (an empty past), which the server serves with reuse on.

    python benchmarks/prefix_engine.py          # ~20 min on 2 cores (the graphs are built once)

The whole sequences run as the server batches them (at most 2048 padded tokens a call); the
split side runs the prompt, then the G responses in one call on G copies of its keys and values.
Random token ids and weights: speed only (the rewards of both sides are checked equal, 1e-3).
Medians of 3 runs a setting; ratios taken side by side.
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
from rewardserve.bundle.batches import OFFLINE_BATCH_TOKENS
from rewardserve.bundle.sessions import session_options
from rewardserve.export import decoder_graph

MAX_POSITIONS = 4096
FORMAT = InputFormat(
    prefix_ids=[], separator_ids=[], suffix_ids=[], pad_id=0, max_length=MAX_POSITIONS,
    token_type_ids=False, position_ids=True, layout="chat",
)  # fmt: skip


def graphs(work: Path) -> Path:
    """The whole and prefix graphs of a Qwen3-0.6B-shaped RM, built once."""
    if not (work / decoder_graph.PREFIX_FILE).is_file():
        dimensions = SHAPES["qwen3-0.6b"][1]
        config = Qwen3Config(**dimensions, max_position_embeddings=MAX_POSITIONS, pad_token_id=0, num_labels=1)
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


class Sessions:
    def __init__(self, work: Path) -> None:
        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(work / name), session_options(), providers=["CPUExecutionProvider"])

        self.whole, self.prefix = session(decoder_graph.GRAPH_FILE), session(decoder_graph.PREFIX_FILE)
        self.portable = session(decoder_graph.PORTABLE_FILE)
        past = [i for i in self.prefix.get_inputs() if i.name.startswith("past.")]
        self.past, (_, self.kv_heads, _, self.head_dim) = [i.name for i in past], past[0].shape
        self.present = [name.replace("past.", "present.") for name in self.past]

    def whole_rewards(self, rows: list[np.ndarray]) -> np.ndarray:
        """In the server's batches: at most OFFLINE_BATCH_TOKENS padded tokens a call."""
        ids, mask = padded(rows)
        per_call = max(1, OFFLINE_BATCH_TOKENS // ids.shape[1])
        feeds = ({"input_ids": i, "attention_mask": m, "position_ids": np.zeros_like(i)} for i, m in (
            (ids[s : s + per_call], mask[s : s + per_call]) for s in range(0, len(rows), per_call)))  # fmt: skip
        return np.concatenate([self.whole.run(["reward"], f)[0] for f in feeds])

    def run_prefix(self, names: list[str], ids, mask, lengths, past: list[np.ndarray] | None) -> list[np.ndarray]:
        rows = len(ids)
        past = past or [np.zeros((rows, self.kv_heads, 0, self.head_dim), np.float32)] * len(self.past)
        feeds = dict(zip(self.past, past, strict=True))
        feeds |= {"input_ids": ids, "attention_mask": mask, "prefix_lengths": np.full(rows, lengths, np.int64)}
        return self.prefix.run(names, feeds)

    def split_rewards(self, prompt: np.ndarray, responses: list[np.ndarray]) -> np.ndarray:
        """The prompt once, then every response after its keys and values, in one call."""
        states = self.run_prefix(self.present, prompt[None], np.ones((1, len(prompt)), np.int64), 0, None)
        ids, mask = padded(responses)
        past = [np.repeat(state, len(responses), axis=0) for state in states]
        return self.run_prefix(["reward"], ids, mask, len(prompt), past)[0]


def timed(run) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def group(sessions: Sessions, prompt_length: int, size: int, rng, packed: bool = False) -> tuple[float, ...]:
    """Seconds for one group: (whole sequences, prompt once); with `packed`, also the cost of the
    other mechanism, one row of the prompt and every response after it under a block mask: the
    attention written in standard operators (the portable graph: GroupQueryAttention takes no
    block mask), over that row's length, which a block mask does not shorten."""
    prompt = rng.integers(1, 32000, prompt_length)
    responses = [rng.integers(1, 32000, n) for n in rng.integers(100, 301, size)]
    whole_seconds, whole = timed(lambda: sessions.whole_rewards([np.concatenate([prompt, r]) for r in responses]))
    split_seconds, split = timed(lambda: sessions.split_rewards(prompt, responses))
    assert np.abs(whole - split).max() < 1e-3, "the prefix graph's rewards differ from the whole sequences'"
    if not packed:
        return whole_seconds, split_seconds
    row = np.concatenate([prompt, *responses])[None]
    feeds = {"input_ids": row, "attention_mask": np.ones_like(row), "position_ids": np.zeros_like(row)}
    packed_seconds, _ = timed(lambda: sessions.portable.run(["reward"], feeds))
    return whole_seconds, split_seconds, packed_seconds


def through_prefix_graph(sessions: Sessions, rows: int, length: int, rng) -> tuple[float, float]:
    """Seconds for whole sequences: (model.onnx, the prefix graph after an empty past)."""
    ids = rng.integers(1, 32000, (rows, length))
    mask = np.ones_like(ids)
    whole_seconds, whole = timed(lambda: sessions.whole_rewards(list(ids)))
    prefix_seconds, prefix = timed(lambda: sessions.run_prefix(["reward"], ids, mask, 0, None)[0])
    assert np.abs(whole - prefix).max() < 1e-3
    return whole_seconds, prefix_seconds


def report(label: str, times: list[tuple[float, float]], sequences: int, names: tuple[str, str]) -> None:
    first, second = (statistics.median(t[i] for t in times) for i in (0, 1))
    print(
        f"{label}: {names[0]} {sequences / first:.2f} seq/s, {names[1]} {sequences / second:.2f} seq/s: "
        f"{first / second:.2f}x",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("models/real-size/qwen3-0.6b/prefix-graphs"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--groups", nargs="+", default=["300x8", "1000x8", "1000x16"], help="PxG")
    parser.add_argument("--threshold", nargs="+", type=int, default=[16, 32, 64, 128, 256], help="prompt lengths")
    args = parser.parse_args()
    sessions = Sessions(graphs(args.work))
    rng = np.random.default_rng(0)
    for rows, length in ((1, 400), (4, 300)):
        times = [through_prefix_graph(sessions, rows, length, rng) for _ in range(args.runs)]
        report(f"whole {rows} x {length} tokens", times, rows, ("model.onnx", "prefix graph"))
    for setting in args.groups:
        prompt_length, size = (int(n) for n in setting.split("x"))
        packed = prompt_length + 300 * size <= MAX_POSITIONS  # the packed row within the rotary tables
        times = [group(sessions, prompt_length, size, rng, packed) for _ in range(args.runs)]
        report(f"P={prompt_length} G={size}", times, size, ("whole", "prompt once"))
        if packed:
            report(f"P={prompt_length} G={size}", [(t[0], t[2]) for t in times], size, ("whole", "packed"))
    for prompt_length in args.threshold:  # where sharing stops paying: a group of 2, and one alone
        for size in (1, 2):
            times = [group(sessions, prompt_length, size, rng) for _ in range(args.runs)]
            report(f"threshold P={prompt_length} G={size}", times, size, ("whole", "split"))


if __name__ == "__main__":
    main()
