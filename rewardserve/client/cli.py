"""`rewardserve score INPUT OUTPUT`: a reward column for every row of a table."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from rewardserve.client.scorers import scorer_arguments


def run(args: argparse.Namespace) -> int:
    from rewardserve.client import RewardServerError
    from rewardserve.client.batch_scoring import Columns, ScoringJobError, score_table
    from rewardserve.client.scorers import open_scorer
    from rewardserve.data.tables import TableError

    columns = Columns(args.prompt_column, args.response_column, args.messages_column, args.output_column)
    try:
        with contextlib.closing(open_scorer(args)) as scorer:
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


def arguments(score: argparse.ArgumentParser, name: str = "score") -> None:
    score.add_argument("input", help="rows to score: .jsonl[.gz], .json, .csv, .parquet or a datasets directory")
    score.add_argument("output", help=".jsonl, .csv or .parquet; every input column is kept")
    scorer_arguments(score, url="score on this rewardserve server", bundle="score in this process on this bundle")
    score.add_argument("--prompt-column", default="prompt", help="default: prompt (a row without it has prompt '')")
    score.add_argument("--response-column", default="response", help="default: response")
    score.add_argument(
        "--messages-column", default="messages", help="chat form, used when a row has it (default: messages)"
    )
    score.add_argument("--output-column", default="reward", help="default: reward")
    score.add_argument("--batch-rows", type=int, default=1024, help="rows read, scored and committed at once")
    score.add_argument("--in-flight", type=int, default=4, help="with --url: batches sent at once (default: 4)")
    score.add_argument("--overwrite", action="store_true", help="start again instead of resuming or refusing")
    score.set_defaults(func=run)
