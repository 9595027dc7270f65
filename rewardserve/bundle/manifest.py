"""The bundle manifest and the only code that reads or writes a bundle directory.

Loading verifies the schema version and the sha256 of every file the manifest lists, so a
corrupted or incomplete bundle fails at start-up with a message naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from rewardserve.bundle.formatting import InputFormat
from rewardserve.bundle.outputs import ModelOutputs

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = 1


class BundleError(Exception):
    """A bundle that cannot be trusted: missing, incomplete, corrupted or of another schema."""


# w8a8: int8 weights and activations, calibrated at export (NNCF), run by OpenVINO; int8: dynamic, by onnxruntime.
Precision = Literal["fp32", "fp16", "bf16", "w8a8", "int8", "int4"]
# The precisions OpenVINO runs (bundle/sessions.py), from graphs in its own format: a decoder's are
# prefix graphs themselves, each with its own judgement after prompts (PrefixGraph.at).
OPENVINO_PRECISIONS: tuple[Precision, ...] = ("bf16", "w8a8")


class Parity(BaseModel):
    """How closely the bundle's ONNX graph reproduces the PyTorch model (fp32), measured at export
    over real sequences in arrival-order batches of mixed lengths (padding present) and alone."""

    sequences: int
    max_abs_diff: float = Field(
        description="Max |reward_onnx - reward_torch|, batched and alone: over every output the model has."
    )
    max_rel_diff: float | None = Field(None, description="max_abs_diff / max |reward_torch|.")
    max_abs_diff_alone_vs_batched: float = Field(
        description="Max |reward alone - reward inside a padded batch| in the ONNX graph."
    )
    by_output: dict[str, float] = Field(
        default_factory=dict, description="max_abs_diff of each output (reward, objectives, gating, step_rewards)."
    )


class Reference(BaseModel):
    """The bundle against its model's reference usage: the code its authors score with, run
    with transformers at export on held-out conversations (fp32)."""

    usage: str = Field(description="The reference computation, as its model card spells it.")
    conversations: int
    max_abs_diff: float = Field(description="Max |served reward - reference reward|; the token ids were equal.")
    by_output: dict[str, float] = Field(
        default_factory=dict, description="max_abs_diff of each output, where the model has more than the reward."
    )


class Agreement(BaseModel):
    """A reduced-precision graph against the fp32 graph it came from, on held-out preference pairs."""

    pairs: int
    decisions_matching: float = Field(description="Share of pairs both graphs order the same way.")
    accuracy_fp32: float
    accuracy: float = Field(description="Pairwise accuracy of this bundle's graph on the same pairs.")


class Variant(BaseModel):
    """A reduced precision of the bundle's model, as the agreement gate judged it at export."""

    passed: bool = Field(description="Whether it passed the gate: only variants that did are served.")
    file: str | None = Field(
        None,
        description="Its own graph (int8, int4, fp16); for bf16 OpenVINO's format with fp16 weights, for w8a8 with "
        "int8 weights and calibrated int8 activations (a decoder's written from its portable prefix graph), or none in "
        "bundles before it (the fp32 graph in OpenVINO).",
    )
    agreement: Agreement
    parity: Parity | None = Field(
        None, description="Against PyTorch fp32, batched and alone: how far a reward moves, and with its batch-mates."
    )
    refused: str | None = Field(None, description="Why the gate refused it.")
    auto_passes_over: str | None = Field(
        None, description="Why `auto` does not serve it though it passed (slower at export): it is served by name."
    )
    seq_per_s: float | None = Field(
        None, description="Held-out sequences a second in the gate's pass, on `measured_on`: what `auto` compares."
    )
    kept_at_bf16: list[str] | None = Field(
        None,
        description="w8a8: its products by a weight left at bf16 (the reward head's, and those mixed precision put "
        "back because their int8 changed fp32's decisions on the calibration examples).",
    )
    measured_on: str = Field(description="The machine the gate ran on: CPU model and flags, or the GPU.")


class GraphInfo(BaseModel):
    """How the bundle's graph was produced."""

    opset: int
    optimizer: str | None = Field(None, description="onnxruntime.transformers model type whose fusions were applied.")
    fused_operators: dict[str, int] = Field(default_factory=dict, description="Fused nodes by operator type.")
    builder: Literal["decoder"] | None = Field(
        None, description="decoder: written from the weights, attention fused (export/decoder_graph.py); else traced."
    )
    fallback: str | None = Field(None, description="Why a less fused graph was kept, when one was.")
    external_data: bool = Field(False, description="Weights in a side file (graphs over 2 GB).")
    prefix_left_out: str | None = Field(None, description="Why a prefix graph was written but not kept.")


class PrefixVariant(BaseModel):
    """Responses scored after their prompt's keys and values in a reduced precision, judged at
    export: the agreement gate against fp32 on held-out pairs (every prompt run once), and how
    far a reward moves from the same precision's whole-sequence path."""

    passed: bool
    agreement: Agreement
    max_abs_diff_whole: float = Field(
        description="Max |reward after the prompt's keys and values - the same sequence's reward run whole|, in "
        "this precision, over the held-out sequences of the gate."
    )
    response_bucket: int | None = Field(
        None,
        description="The multiple each response was padded to after its prompt when max_abs_diff_whole was measured "
        "(the runtime's response_bucket). None: 16, in bundles exported before it was recorded.",
    )
    refused: str | None = None


class PrefixGraph(BaseModel):
    """A decoder's graph that reads the keys and values of the tokens before its input as past
    ones (bundle/prefix.py): responses to one prompt are scored with the prompt run once."""

    file: str = "model.prefix.onnx"
    sequences: int = Field(description="Held-out sequences the check below ran on.")
    max_abs_diff: float = Field(
        description="Max |output - PyTorch's| over every output, fp32: whole sequences (an empty past) and each "
        "response after its prompt's keys and values, every prompt run once."
    )
    portable_file: str | None = Field(
        None,
        description="The same graph in standard operators, which OpenVINO reads: checked against PyTorch at fp32 as "
        "`file` is (portable_max_abs_diff), and the graph the bf16 variant is written from.",
    )
    portable_max_abs_diff: float | None = None
    bf16: PrefixVariant | None = Field(
        None,
        description="The bf16 variant's graph (written from the portable prefix graph) scoring responses after their "
        "prompts, as its gate judged it.",
    )
    w8a8: PrefixVariant | None = Field(None, description="The same for the w8a8 variant's graph.")

    def at(self, precision: Precision) -> PrefixVariant | None:
        """The judgement of `precision`'s own prefix graph (an OpenVINO variant's), if it has one."""
        return getattr(self, precision) if precision in OPENVINO_PRECISIONS else None


class Manifest(BaseModel):
    """Everything needed to turn a request into the model's token ids and a reward."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(description="Model name returned by the API.")
    model_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    input_format: InputFormat
    output_name: str = Field("reward", description="ONNX output holding one reward per sequence.")
    outputs: ModelOutputs = Field(
        default_factory=ModelOutputs,
        description="What the model answers besides one scalar: named objectives, or per-step rewards "
        "(bundle/outputs.py). Empty: one scalar reward, as every bundle before them.",
    )
    precision: Precision = Field(
        "fp32", description="model_file's precision: fp32 (bundles before variants: fp16 or int8 too)."
    )
    graph: GraphInfo | None = None
    calibration_temperature: float = Field(1.0, gt=0, description="p(a better than b) = sigmoid((r_a - r_b) / T).")
    reward_mean: float | None = Field(None, description="Mean reward on a reference set (for normalising).")
    reward_std: float | None = Field(None, description="Reward standard deviation on the same set.")
    parity: Parity | None = None
    prefix: PrefixGraph | None = Field(
        None, description="The graph that scores responses against a prompt run once (decoders written from weights)."
    )
    reference: Reference | None = Field(None, description="The served rewards against the model's reference usage.")
    agreement: Agreement | None = Field(None, description="Older bundles: a reduced model_file's gate figures.")
    variants: dict[Precision, Variant] = Field(
        default_factory=dict, description="Reduced precisions gated at export, passed or refused."
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="Base model, data files and hashes, training metrics."
    )
    files: dict[str, str] = Field(default_factory=dict, description="sha256 of every bundle file.")

    def offered(self, auto: bool = False) -> dict[Precision, str | None]:
        """Every precision this bundle has a record of -> None where it may be served (by `auto`
        when `auto`), else why not."""
        offered: dict[Precision, str | None] = {self.precision: None}
        for precision, variant in self.variants.items():
            offered[precision] = None if variant.passed else f"refused at export: {variant.refused}"
            if variant.passed and auto and variant.auto_passes_over:
                offered[precision] = variant.auto_passes_over
        return offered

    def graph_file(self, precision: Precision) -> str:
        """The graph that runs at `precision`: the variant's own, or model_file."""
        variant = self.variants.get(precision)
        return variant.file if variant is not None and variant.file else self.model_file


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_digest(manifest: Manifest) -> str:
    """sha256 identifying a bundle's contents: over the checksums of all its files."""
    listing = "\n".join(f"{name} {sha}" for name, sha in sorted(manifest.files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def save_bundle(directory: Path, manifest: Manifest) -> Manifest:
    """Write manifest.json for the files already in `directory`, with their checksums.

    The manifest is written last, so a directory without one is an unfinished export.
    """
    directory = Path(directory)
    files = {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    for required in (manifest.model_file, manifest.tokenizer_file):
        if required not in files:
            raise BundleError(f"{directory / required}: missing from the bundle being saved")
    manifest = manifest.model_copy(update={"files": files})
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_bundle(directory: Path) -> Manifest:
    """Read and verify a bundle; raise BundleError naming the first bad file."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: not found (is {directory} a rewardserve bundle?)")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if isinstance(raw, dict) and raw.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema_version {raw.get('schema_version')!r}, this rewardserve reads {SCHEMA_VERSION}"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{manifest_path}: invalid manifest: {exc}") from exc
    for name in (manifest.model_file, manifest.tokenizer_file):
        if name not in manifest.files:
            raise BundleError(f"{manifest_path}: lists no checksum for {name}")
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if sha256_file(path) != expected:
            raise BundleError(f"{path}: sha256 mismatch (corrupted or modified file)")
    return manifest
