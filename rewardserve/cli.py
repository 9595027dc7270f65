"""The `rewardserve` command: train, export, eval, score, inspect, serve, bench, soak.

Each layer owns its commands (`training/cli.py`, `export/cli.py`, ...): a module with
`arguments(parser)`, which sets `func`. Only the module of the command being run is imported,
so that `rewardserve serve` loads neither training nor torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command: (module that defines it, one line of help)
COMMANDS = {
    "train": ("rewardserve.training.cli", "fine-tune a reward model on preference pairs"),
    "export": ("rewardserve.export.cli", "export a reward checkpoint to a verified ONNX bundle"),
    "eval": (
        "rewardserve.eval.cli",
        "pairwise accuracy, calibration and length bias on preference pairs, with an HTML report",
    ),
    "score": ("rewardserve.client.cli", "add a reward column to every row of a JSONL, CSV or Parquet file (resumable)"),
    "inspect": ("rewardserve.bundle.describe", "verify a bundle and print its manifest readably"),
    "serve": (
        "rewardserve.service.main",
        "serve a bundle over HTTP (every other setting: REWARDSERVE_* variables, see docs/operate.md)",
    ),
    "bench": (
        "rewardserve.bench.cli",
        "load-test the server on real HH texts against the raw engine and a naive server",
    ),
    "soak": (
        "rewardserve.bench.cli",
        "offer a multiple of the server's capacity for a while: statuses, 429 latency, memory",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command listed; the arguments of `command` (None: every command's) added."""
    parser = argparse.ArgumentParser(prog="rewardserve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help) in COMMANDS.items():
        sub = commands.add_parser(name, help=help, description=help)
        if command is None or name == command:
            importlib.import_module(module).arguments(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else "").parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
