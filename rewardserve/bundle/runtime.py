"""Run a bundle's ONNX graph: the scoring code shared by the server, export parity and eval."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rewardserve.bundle.formatting import EncodedBatch, PairEncoder
from rewardserve.bundle.manifest import Manifest, load_bundle


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class BundleRuntime:
    """A verified bundle with its tokenizer and an ONNX Runtime session.

    Not thread-safe for concurrent `run` calls by design: the server's batcher owns one.
    """

    def __init__(self, directory: Path, manifest: Manifest | None = None) -> None:
        directory = Path(directory)
        self.directory = directory
        self.manifest = manifest or load_bundle(directory)
        self.encoder = PairEncoder.from_file(directory / self.manifest.tokenizer_file, self.manifest.input_format)
        options = ort.SessionOptions()
        options.intra_op_num_threads = available_cpus()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(directory / self.manifest.model_file), options, providers=["CPUExecutionProvider"]
        )

    def run(self, batch: EncodedBatch) -> np.ndarray:
        """Rewards (float32, one per row) of a padded batch."""
        (rewards,) = self.session.run([self.manifest.output_name], batch.arrays)
        return rewards.reshape(-1)

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Rewards of many pairs, batched by length to keep padding small; input order kept."""
        pairs = self.encoder.encode(prompts, responses)
        order = np.argsort([len(p) for p in pairs], kind="stable")
        rewards = np.empty(len(pairs), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rewards[chunk] = self.run(self.encoder.pad([pairs[i] for i in chunk]))
        return rewards
