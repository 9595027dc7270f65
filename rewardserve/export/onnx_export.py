"""Checkpoint -> ONNX bundle, with PyTorch/ONNX parity measured on real sequences."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rewardserve.bundle import BundleRuntime, EncodedPair, Manifest, PairEncoder, save_bundle
from rewardserve.bundle.manifest import Parity
from rewardserve.training.checkpoint import STATS_FILE, TOKENIZER_FILE, load_input_format
from rewardserve.training.reward_model import load_reward_model

OPSET = 18
PARITY_TOLERANCE = 1e-4  # fp32 graph vs PyTorch eager, absolute


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model's rewards."""


class _RewardOutput(torch.nn.Module):
    """A sequence-classification model reduced to one reward per sequence."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True))).logits[:, 0]


def export_bundle(
    checkpoint: Path,
    out: Path,
    parity_pairs: Sequence[tuple[str, str]],
    name: str | None = None,
    provenance: dict | None = None,
) -> Manifest:
    """Export `checkpoint` to a bundle in `out`, after checking parity on `parity_pairs`.

    The bundle is assembled in a temporary directory and moved into place only once it has
    passed, so `out` never holds a half-written bundle.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    fmt = load_input_format(checkpoint)
    model = load_reward_model(checkpoint).eval()
    encoder = PairEncoder.from_file(checkpoint / TOKENIZER_FILE, fmt)
    sequences = encoder.encode([p for p, _ in parity_pairs], [r for _, r in parity_pairs])
    if not sequences:
        raise ValueError("parity needs at least one (prompt, response) pair")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-export-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is read by other users (containers)
    try:
        # eval(): the exporter restores the wrapper's mode afterwards, and a fresh Module is in
        # training mode, which would switch dropout on in the model that parity compares against.
        wrapper = _RewardOutput(model, fmt.input_names).eval()
        _export_onnx(wrapper, encoder.pad(sequences[:2]).arrays, fmt.input_names, staging)
        shutil.copyfile(checkpoint / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        manifest = Manifest(
            name=name or checkpoint.name, input_format=fmt, provenance=provenance or {}, **_reward_stats(checkpoint)
        )
        manifest = save_bundle(staging, manifest)
        parity = measure_parity(model, BundleRuntime(staging, manifest), sequences)
        if parity.max_abs_diff > PARITY_TOLERANCE or parity.max_abs_diff_alone_vs_batched > PARITY_TOLERANCE:
            raise ParityError(f"ONNX graph differs from PyTorch beyond {PARITY_TOLERANCE}: {parity}")
        manifest = save_bundle(staging, manifest.model_copy(update={"parity": parity}))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _reward_stats(checkpoint: Path) -> dict:
    """Reward mean/std and calibration temperature that training measured, when it did."""
    path = checkpoint / STATS_FILE
    stats = json.loads(path.read_text()) if path.is_file() else {}
    keys = ("calibration_temperature", "reward_mean", "reward_std")
    return {k: stats[k] for k in keys if k in stats}


def _export_onnx(module: torch.nn.Module, example: dict[str, np.ndarray], names: list[str], out: Path) -> None:
    args = tuple(torch.from_numpy(example[n]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(out / "model.onnx"),
            input_names=names,
            output_names=["reward"],
            dynamic_axes={**axes, "reward": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


@torch.inference_mode()
def torch_rewards(model: torch.nn.Module, encoder: PairEncoder, sequences: Sequence[EncodedPair]) -> np.ndarray:
    batch = {k: torch.from_numpy(v) for k, v in encoder.pad(sequences).arrays.items()}
    return model(**batch).logits[:, 0].float().numpy()


def measure_parity(
    model: torch.nn.Module, runtime: BundleRuntime, sequences: Sequence[EncodedPair], batch_size: int = 32
) -> Parity:
    """Compare rewards in arrival-order batches of mixed lengths (padding present) and alone
    (padding absent), between PyTorch and ONNX and between alone and batched in ONNX."""
    encoder = runtime.encoder
    batched_onnx, batched_torch = [], []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        batched_onnx.append(runtime.run(encoder.pad(chunk)))
        batched_torch.append(torch_rewards(model, encoder, chunk))
    onnx_batched = np.concatenate(batched_onnx)
    torch_batched = np.concatenate(batched_torch)
    alone = sequences[: min(len(sequences), 64)]
    onnx_alone = np.array([runtime.run(encoder.pad([s]))[0] for s in alone])
    torch_alone = np.array([torch_rewards(model, encoder, [s])[0] for s in alone])
    return Parity(
        sequences=len(sequences),
        max_abs_diff=float(max(np.abs(onnx_batched - torch_batched).max(), np.abs(onnx_alone - torch_alone).max())),
        max_abs_diff_alone_vs_batched=float(np.abs(onnx_alone - onnx_batched[: len(alone)]).max()),
    )
