"""`rewardserve eval`: how well a served model or a bundle agrees with held-out preferences."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from rewardserve.client.scorers import scorer_arguments
from rewardserve.data.hh import default_data_files


def run(args: argparse.Namespace) -> int:
    if args.benchmark:
        return run_benchmark(args)
    from rewardserve.bundle.chat import PAIR_LAYOUT_TEMPLATE
    from rewardserve.client import RewardServerError
    from rewardserve.client.scorers import LocalScorer, open_scorer
    from rewardserve.data.preferences import DataError, DataOptions, load_preferences
    from rewardserve.eval.evaluate import build_report, compare_pairs
    from rewardserve.eval.html_report import render_html

    try:
        scorer = open_scorer(args)
        # Conversational rows are rendered to text here: with the bundle's template in-process;
        # a server's template cannot be asked for, so --chat-template names it. A chat-layout
        # bundle in-process reads each example as its conversation instead (HH transcripts as
        # their turns), as the model card scores it.
        layout = "pair"
        if isinstance(scorer, LocalScorer):
            if scorer.runtime.manifest.outputs.steps is not None:
                raise ValueError("a process reward model's bundle reads responses as steps, not preference pairs")
            layout = scorer.runtime.manifest.input_format.layout
            template = scorer.runtime.manifest.input_format.chat_template
        else:
            template = args.chat_template.read_text() if args.chat_template else PAIR_LAYOUT_TEMPLATE
        examples, data_report = load_preferences(args.data, split=args.split, options=DataOptions(template))
        print(f"data: {data_report}", file=sys.stderr)
        with contextlib.closing(scorer):
            pairs = compare_pairs(scorer, examples, layout)
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


def run_benchmark(args: argparse.Namespace) -> int:
    """`--benchmark`: RewardBench's or RewardBench 2's figures on the file the user downloaded."""
    from rewardserve.client import RewardServerError
    from rewardserve.client.scorers import open_scorer
    from rewardserve.data.rewardbench import BenchmarkError
    from rewardserve.eval.benchmark import evaluate_benchmark, table
    from rewardserve.eval.benchmark_report import render_benchmark_html

    try:
        if args.data == default_data_files() or len(args.data) != 1:
            raise ValueError(f"--benchmark {args.benchmark}: give the benchmark's one file (.parquet or .jsonl)")
        with contextlib.closing(open_scorer(args)) as scorer:
            report = evaluate_benchmark(scorer, args.data[0], args.benchmark, where=args.url or args.bundle)
    except (BenchmarkError, RewardServerError, OSError, ValueError) as exc:
        print(f"rewardserve: cannot evaluate: {exc}", file=sys.stderr)
        return 2
    print(table(report))
    if args.report:
        page = Path(args.report)
        page.write_text(render_benchmark_html(report), encoding="utf-8")
        page.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {page} and {page.with_suffix('.json')}")
    return 0


def arguments(evaluate: argparse.ArgumentParser, name: str = "eval") -> None:
    evaluate.add_argument(
        "data",
        nargs="*",
        type=Path,
        default=default_data_files(),
        help="preference files (.jsonl[.gz], .json, .parquet, .csv) or datasets directories "
        "(default: the shipped HH-RLHF files)",
    )
    scorer_arguments(
        evaluate,
        url="evaluate the model this rewardserve server serves (through /compare)",
        bundle="evaluate this bundle in-process",
    )
    evaluate.add_argument(
        "--benchmark",
        choices=["rewardbench", "rewardbench2"],
        help="score DATA (the benchmark's file, downloaded) by the benchmark's own rules, on raw rewards",
    )
    evaluate.add_argument("--split", choices=["heldout", "validation", "train", "all"], default="heldout")
    evaluate.add_argument("--report", help="write this HTML page, and the figures as JSON beside it (.json)")
    evaluate.add_argument(
        "--chat-template", type=Path, help="with --url: Jinja template for conversational rows (the server's)"
    )
    evaluate.set_defaults(func=run)
