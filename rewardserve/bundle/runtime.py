"""Run a reward graph with ONNX Runtime: the scoring code shared by the server, export and eval."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rewardserve.bundle.formatting import EncodedBatch, PairEncoder
from rewardserve.bundle.manifest import Manifest, Precision, load_bundle


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def providers_for(precision: Precision) -> list[str]:
    """fp32 and fp16 graphs run on CUDA when this onnxruntime has it. int8 graphs stay on the CPU:
    their dynamic-quantisation operators have no CUDA kernels, so the GPU would only copy."""
    cuda = "CUDAExecutionProvider" in ort.get_available_providers() and precision != "int8"
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


class GraphRunner:
    """An ONNX Runtime session on a reward graph, with the encoder that builds its inputs.

    Not thread-safe for concurrent `run` calls by design: the server's batcher owns one.
    """

    def __init__(
        self, graph: Path, encoder: PairEncoder, output_name: str = "reward", providers: Sequence[str] | None = None
    ) -> None:
        self.encoder = encoder
        self.output_name = output_name
        options = ort.SessionOptions()
        options.intra_op_num_threads = available_cpus()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(graph), options, providers=list(providers or providers_for("fp32")))

    def run(self, batch: EncodedBatch) -> np.ndarray:
        """Rewards (float32, one per row) of a padded batch."""
        (rewards,) = self.session.run([self.output_name], batch.arrays)
        return rewards.reshape(-1).astype(np.float32, copy=False)

    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Rewards of many pairs, batched by length to keep padding small; input order kept."""
        pairs = self.encoder.encode(prompts, responses)
        order = np.argsort([len(p) for p in pairs], kind="stable")
        rewards = np.empty(len(pairs), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rewards[chunk] = self.run(self.encoder.pad([pairs[i] for i in chunk]))
        return rewards


class BundleRuntime(GraphRunner):
    """A verified bundle: its graph, tokenizer and manifest."""

    def __init__(self, directory: Path, manifest: Manifest | None = None) -> None:
        directory = Path(directory)
        self.directory = directory
        self.manifest = manifest or load_bundle(directory)
        encoder = PairEncoder.from_file(directory / self.manifest.tokenizer_file, self.manifest.input_format)
        graph = directory / self.manifest.model_file
        super().__init__(graph, encoder, self.manifest.output_name, providers_for(self.manifest.precision))
