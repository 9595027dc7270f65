"""`rewardserve bench` and `rewardserve soak`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _bench(args: argparse.Namespace) -> int:
    from rewardserve.bench.options import BenchOptions
    from rewardserve.bench.run import bench

    options = BenchOptions(
        bundle=Path(args.bundle),
        url=args.url,
        concurrency=args.concurrency,
        items_per_request=args.items,
        single_concurrency=args.single_concurrency,
        sequences=args.sequences,
        single_requests=args.single_requests,
        baseline_checkpoint=Path(args.baseline_checkpoint) if args.baseline_checkpoint else None,
        baseline=args.baseline,
        rounds=args.rounds,
        versus=Path(args.versus) if args.versus else None,
    )
    return bench(options)


def _soak(args: argparse.Namespace) -> int:
    from rewardserve.bench.overload import soak

    return soak(
        Path(args.bundle),
        factor=args.factor,
        seconds=args.seconds,
        per_request=args.items,
        max_outstanding=args.max_outstanding,
    )


def arguments(parser: argparse.ArgumentParser, name: str) -> None:
    (_bench_arguments if name == "bench" else _soak_arguments)(parser)


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--bundle", required=True, help="bundle to serve (and to run the raw engine on)")
    bench.add_argument("--url", help="load this running server instead of starting one on the bundle")
    bench.add_argument("--concurrency", type=int, default=64, help="clients, each with one request in flight")
    bench.add_argument("--items", type=int, default=8, help="items per request (default: 8)")
    bench.add_argument(
        "--single-concurrency",
        type=int,
        default=128,
        help="clients sending one item per request, as OpenRLHF and verl do (default: 128)",
    )
    bench.add_argument(
        "--sequences", type=int, default=2048, help="distinct HH sequences sent in each load shape (default: 2048)"
    )
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
        "--rounds", type=int, default=3, help="slices measured in turn on every server and the engine (default: 3)"
    )
    bench.add_argument(
        "--versus",
        help="a checkout of rewardserve (e.g. `git worktree add ../before HEAD~1`) whose server is measured "
        "beside this one's, round by round",
    )
    bench.set_defaults(func=_bench)


def _soak_arguments(soak: argparse.ArgumentParser) -> None:
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
    soak.set_defaults(func=_soak)
