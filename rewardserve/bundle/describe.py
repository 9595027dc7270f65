"""`rewardserve inspect`: a bundle's manifest as text a person reads."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewardserve.bundle.formatting import InputFormat
from rewardserve.bundle.manifest import OPENVINO_PRECISIONS, Manifest, Variant


def _by_output(diffs: dict[str, float]) -> str:
    return "; " + ", ".join(f"{name} {diff:.2g}" for name, diff in diffs.items()) if diffs else ""


def describe_bundle(directory: Path, manifest: Manifest) -> str:
    """One `key  value` line per fact, grouped as the manifest is; the chat template by size only."""
    directory = Path(directory)
    fmt = manifest.input_format
    lines = [
        ("bundle", f"{directory} (schema {manifest.schema_version}, every file's sha256 verified)"),
        ("name", manifest.name),
        ("model", f"{manifest.model_file} ({_size(directory / manifest.model_file)}), output {manifest.output_name!r}"),
        ("outputs", manifest.outputs.describe()),
        ("precision", manifest.precision),
        ("tokenizer", manifest.tokenizer_file),
        ("layout", _layout(fmt)),
        ("inputs", ", ".join(fmt.input_names)),
        ("max length", f"{fmt.max_length} tokens"),
        ("truncation", _truncation(fmt)),
        ("padding", f"{fmt.padding_side}, pad id {fmt.pad_id}"),
        ("chat template", f"{len(fmt.chat_template)} characters"),
        ("calibration T", f"{manifest.calibration_temperature:.4g}"),
        ("reward mean/std", _mean_std(manifest)),
    ]
    lines += _checks(manifest)
    if manifest.agreement is not None:
        gate = manifest.agreement
        lines.append(
            (
                "agreement",
                f"{gate.pairs} held-out pairs: {gate.decisions_matching:.2%} ordered as fp32 does, "
                f"accuracy {gate.accuracy:.4f} (fp32 {gate.accuracy_fp32:.4f})",
            )
        )
    for precision, variant in manifest.variants.items():
        lines.append((f"variant {precision}", _variant(variant)))
    if manifest.graph is not None:
        lines += [(f"graph.{key}", value) for key, value in _flatten(manifest.graph.model_dump())]
    lines += [(f"provenance.{key}", value) for key, value in _flatten(manifest.provenance)]
    lines += [(f"sha256 {name}", digest) for name, digest in manifest.files.items()]
    width = max(len(key) for key, _ in lines)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in lines)


def _checks(manifest: Manifest) -> list[tuple[str, str]]:
    """What export checked the graphs against: PyTorch (parity), the model card's usage
    (reference), and the prefix graph, whole and after prompts."""
    out: list[tuple[str, str]] = []
    if manifest.parity is not None:
        parity = manifest.parity
        relative = f" ({parity.max_rel_diff:.2g} relative)" if parity.max_rel_diff is not None else ""
        out.append(
            (
                "parity",
                f"{parity.sequences} sequences: max |ONNX - PyTorch| {parity.max_abs_diff:.2g}{relative}, "
                f"alone vs batched {parity.max_abs_diff_alone_vs_batched:.2g}{_by_output(parity.by_output)}",
            )
        )
    if (reference := manifest.reference) is not None:
        out.append(
            (
                "reference",
                f"{reference.conversations} held-out inputs: the same ids as {reference.usage}, "
                f"rewards within {reference.max_abs_diff:.2g}{_by_output(reference.by_output)}",
            )
        )
    if manifest.prefix is not None:
        prefix = manifest.prefix
        out.append(
            (
                "prefix graph",
                f"{prefix.file}: {prefix.sequences} held-out sequences, whole and after their prompts' keys and "
                f"values, within {prefix.max_abs_diff:.2g} of PyTorch"
                + (
                    f"; {prefix.portable_file} (OpenVINO) within {prefix.portable_max_abs_diff:.2g}"
                    if prefix.portable_file
                    else ""
                ),
            )
        )
        for precision in OPENVINO_PRECISIONS:
            if (judged := prefix.at(precision)) is None:
                continue
            gate = judged.agreement
            verdict = "passed" if judged.passed else f"refused ({judged.refused})"
            out.append(
                (
                    f"prefix graph {precision}",
                    f"{verdict}: {gate.pairs} held-out pairs, each prompt once: {gate.decisions_matching:.2%} ordered "
                    f"as fp32 does, accuracy {gate.accuracy:.4f} (fp32 {gate.accuracy_fp32:.4f}); rewards within "
                    f"{judged.max_abs_diff_whole:.2g} of {precision} run whole",
                )
            )
    return out


def _variant(variant: Variant) -> str:
    gate = variant.agreement
    figures = (
        f"{gate.pairs} held-out pairs: {gate.decisions_matching:.2%} ordered as fp32 does, "
        f"accuracy {gate.accuracy:.4f} (fp32 {gate.accuracy_fp32:.4f})"
    )
    if variant.parity is not None:
        figures += (
            f"; max |reward - PyTorch fp32| {variant.parity.max_abs_diff:.2g}, "
            f"alone vs batched {variant.parity.max_abs_diff_alone_vs_batched:.2g}"
        )
    if variant.seq_per_s is not None:
        figures += f"; {variant.seq_per_s:.1f} seq/s"
    verdict = f"passed, {variant.file or 'runs the fp32 graph'}" if variant.passed else "refused"
    if variant.passed and variant.auto_passes_over:
        verdict += f" (auto passes over it: {variant.auto_passes_over})"
    return f"{verdict}: {figures} (on {variant.measured_on})"


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def _mean_std(manifest: Manifest) -> str:
    if manifest.reward_mean is None or manifest.reward_std is None:
        return "not measured"
    return f"{manifest.reward_mean:.4g} / {manifest.reward_std:.4g}"


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Nested provenance as dotted keys; lists of records by index."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{index}]")
    else:
        yield prefix, str(value)


def _run(args: argparse.Namespace) -> int:
    """`rewardserve inspect BUNDLE`."""
    from rewardserve.bundle.manifest import BundleError, load_bundle

    try:
        manifest = load_bundle(Path(args.bundle))
    except BundleError as exc:
        print(f"rewardserve: cannot inspect: {exc}", file=sys.stderr)
        return 2
    print(describe_bundle(Path(args.bundle), manifest))
    return 0


def arguments(inspect: argparse.ArgumentParser, name: str = "inspect") -> None:
    inspect.add_argument("bundle", help="bundle directory")
    inspect.set_defaults(func=_run)


def _truncation(fmt: InputFormat) -> str:
    if fmt.judge is not None:
        return "the prompt's earliest turns dropped; a judge's text still over max length is refused (413)"
    return f"{fmt.truncation} (the last {fmt.min_prompt_tokens} prompt tokens kept before the response is cut)"


def _layout(fmt: InputFormat) -> str:
    if fmt.judge is not None:
        return (
            f"judge: the conversation written into the rubric, rendered with the chat template, then the answer "
            f"prefix; the verdict read at the last token. {fmt.judge.describe()}"
        )
    if fmt.layout == "chat":
        return "chat: the whole conversation rendered with the chat template, tokenized in one piece"
    return f"pair: {fmt.prefix_ids} prompt {fmt.separator_ids} response {fmt.suffix_ids}"
