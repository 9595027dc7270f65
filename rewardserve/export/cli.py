"""`rewardserve export`: a reward checkpoint -> a verified ONNX bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rewardserve.data.hh import default_data_files
from rewardserve.data.preferences import DataOptions, data_argument, data_provenance, load_preferences

if TYPE_CHECKING:  # imported where used: `rewardserve serve` must not load torch through this module
    from rewardserve.bundle import Manifest
    from rewardserve.export.source import OutputOptions

PARITY_PAIRS = 128  # 256 sequences: each pair's chosen and rejected response


def _checkpoint_data_options(checkpoint: Path) -> DataOptions:
    """Chat rows are rendered as the checkpoint was trained, when we trained it."""
    from rewardserve.training.checkpoint import FORMAT_FILE, load_input_format

    if (checkpoint / FORMAT_FILE).is_file():
        return DataOptions(chat_template=load_input_format(checkpoint).chat_template)
    return DataOptions()


def run(args: argparse.Namespace) -> int:
    from rewardserve.export.onnx_export import PassSizes, export_bundle
    from rewardserve.export.parity import ParityError
    from rewardserve.export.precision import PrecisionRefused
    from rewardserve.export.reference import ReferenceMismatch

    checkpoint = Path(args.checkpoint)
    options = _checkpoint_data_options(checkpoint)
    heldout, _ = load_preferences(args.parity_data, split="heldout", options=options)
    examples = max(PARITY_PAIRS, (args.parity_sequences or 0) // 2 + 1)  # HH examples hold two responses
    parity_pairs = [(e.prompt, r) for e in heldout[:examples] for r in e.responses]
    calibration = load_preferences(args.calibration_data, "all", options)[0] if args.calibration_data else []
    provenance = {"export_data": {"heldout": data_provenance(args.parity_data)}}
    if args.calibration_data:
        provenance["export_data"]["calibration"] = data_provenance(args.calibration_data)
    try:
        manifest = export_bundle(
            checkpoint,
            Path(args.out),
            parity_pairs,
            heldout,
            name=args.name,
            precision=args.precision,
            optimize=args.optimize,
            max_length=args.max_length,
            padding_side=args.padding_side,
            calibration=calibration,
            provenance=provenance,
            sizes=PassSizes(
                args.parity_sequences, args.reference_conversations, args.gate_pairs, args.statistics_pairs
            ),
            output_options=_output_options(args),
        )
    except (PrecisionRefused, ParityError, ReferenceMismatch) as exc:
        print(f"rewardserve: export refused: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a setting the checkpoint cannot take
        print(f"rewardserve: cannot export: {exc}", file=sys.stderr)
        return 2
    _report(manifest, args.out)
    return 0


def _report(manifest: Manifest, out: str) -> None:
    """What the export wrote, and what each precision's gate decided."""
    graph = manifest.graph
    fused = ", ".join(f"{op} {n}" for op, n in graph.fused_operators.items()) or f"none ({graph.fallback})"
    print(f"bundle {manifest.name!r} in {out}: fp32, fused: {fused}")
    print(f"outputs: {manifest.outputs.describe()}")
    print(f"parity: {manifest.parity}")
    print(f"reference: {manifest.reference}")
    if manifest.prefix or graph.prefix_left_out:
        print(f"prefix graph: {manifest.prefix or 'left out: ' + graph.prefix_left_out}")
    for precision, variant in manifest.variants.items():
        verdict = "ships" if variant.passed else variant.refused
        print(f"{precision}: {verdict}; agreement with fp32: {variant.agreement}; parity: {variant.parity}")
    for precision, why in manifest.provenance["export"].get("precisions_not_gated", {}).items():
        print(f"{precision}: not gated: {why}")


def _output_options(args: argparse.Namespace) -> OutputOptions:
    from rewardserve.export.source import OutputOptions

    return OutputOptions(
        objectives=args.objectives,
        reward_objective=args.reward_objective,
        reward_weights=args.reward_weights,
        step_separator=args.step_separator,
        step_label=args.step_label,
        step_scalar=args.step_scalar,
        step_tokens=args.step_tokens,
        trust_remote_code=args.trust_remote_code,
        gating_pattern=args.gating_pattern,
        judge=args.judge,
    )


def arguments(export: argparse.ArgumentParser, name: str = "export") -> None:
    export.add_argument(
        "checkpoint", help="checkpoint directory: written by `rewardserve train`, or any HF sequence-classification RM"
    )
    export.add_argument("--out", required=True, help="bundle directory to write")
    export.add_argument("--name", help="model name reported by the API (default: checkpoint folder name)")
    export.add_argument(
        "--precision",
        choices=["fp32", "int8", "int4", "bf16", "w8a8", "fp16", "auto"],
        default="fp32",
        help="reduced-precision variants to ship beside the fp32 graph: int8 or int4 (CPU), bf16 (OpenVINO, on a "
        "CPU with bf16 instructions), w8a8 (int8 weights and calibrated int8 activations, OpenVINO, on a CPU with int8 "
        "dot products) or fp16 (CUDA), each only if it passes the agreement gate, else export fails; "
        "auto: every one this machine can gate, shipping those that pass (default: fp32 only)",
    )
    export.add_argument(
        "--optimize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fuse attention/LayerNorm/GELU with onnxruntime's transformer optimizer (default: on)",
    )
    export.add_argument("--max-length", type=int, help="tokens per sequence (default: the checkpoint's)")
    export.add_argument(
        "--padding-side", choices=["right", "left"], help="padding side of batches (default: the checkpoint's)"
    )
    data_argument(
        export,
        "--parity-data",
        default_data_files(),
        "their held-out split checks parity and gates reduced precisions (default: the shipped HH-RLHF files)",
    )
    _pass_size_arguments(export)
    data_argument(export, "--calibration-data", None, "fit the calibration temperature on them (default: training's)")
    _output_arguments(export)
    export.set_defaults(func=run)


def _pass_size_arguments(export: argparse.ArgumentParser) -> None:
    # Defaults: all for models up to 100M parameters; samples above, which run a few sequences a second.
    export.add_argument(
        "--parity-sequences",
        type=int,
        help=f"held-out sequences parity is measured on, at least 64 (default: {2 * PARITY_PAIRS}; 64 above 100M "
        "parameters)",
    )
    export.add_argument(
        "--reference-conversations",
        type=int,
        help="held-out inputs compared with the model's own transformers usage, at least 64 (default: 128; 64 "
        "above 100M parameters)",
    )
    export.add_argument(
        "--gate-pairs", type=int, help="held-out examples the agreement gate uses (default: all; 256 above 100M)"
    )
    export.add_argument(
        "--statistics-pairs",
        type=int,
        help="held-out examples reward mean/std are measured on, when training left none (default: all; 128 "
        "above 100M)",
    )


def _output_arguments(export: argparse.ArgumentParser) -> None:
    outputs = export.add_argument_group(
        "models with more than one output",
        "multi-objective heads (N labels, or a gated head like ArmoRM's) and process reward models "
        "(token classification): what export cannot read off the model",
    )
    outputs.add_argument(
        "--objectives", type=_names, help="names of the head's N objectives, comma-separated (default: its id2label)"
    )
    rule = outputs.add_mutually_exclusive_group()
    rule.add_argument("--reward-objective", help="an N-label head's scalar reward is this objective")
    rule.add_argument(
        "--reward-weights", type=_weights, help="an N-label head's scalar reward is this weighted sum (w1,...,wN)"
    )
    outputs.add_argument(
        "--step-separator", help="a process reward model's step token, e.g. '<extra_0>' (Qwen2.5-Math-PRM)"
    )
    outputs.add_argument("--step-label", type=int, default=1, help="the class whose probability is a step's reward")
    outputs.add_argument(
        "--step-scalar",
        choices=["min", "mean", "product", "last"],
        default="min",
        help="how a response's step rewards make its scalar reward (default: min)",
    )
    outputs.add_argument(
        "--step-tokens",
        type=lambda text: text.split(","),  # as they are: a token's leading space is part of it
        metavar="GOOD,BAD",
        help="read a causal LM (*ForCausalLM) as a process reward model: a step's reward is p(GOOD) over GOOD and "
        "BAD at its --step-separator (Math-Shepherd: +,-)",
    )
    outputs.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="load the checkpoint's own modeling code (config auto_map: ArmoRM's gated head); read it first",
    )
    outputs.add_argument(
        "--judge",
        metavar="PRESET_OR_FILE",
        help="serve a causal LM (*ForCausalLM) as a judge: its reward read from its verdict token's probability in "
        "one pass; a preset (helpfulness: yes/no; rating-10, rating-5: expected score; pairwise: A or B, on /compare) "
        "or a judge file (docs/your-model.md#judges)",
    )
    outputs.add_argument(
        "--gating-pattern",
        help="text whose tokens' last occurrence the gating network reads (default: the code's token_pattern)",
    )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not comma-separated numbers") from None
