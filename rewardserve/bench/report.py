"""The bench report: every figure of every round together, and the ratios that matter as medians
of the rounds (each ratio taken within a round, where both sides saw the same machine)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rewardserve.bench.engine import EngineRun
from rewardserve.bench.load import TIMING_HEADERS, LoadResult, ServerCounts
from rewardserve.bench.options import BenchOptions, Served


@dataclass(frozen=True)
class Round:
    server: dict[str, Served]  # by server name: the concurrency x items load
    single: dict[str, Served]  # by server name: one sample per request
    engine: EngineRun
    naive: LoadResult | None
    tokens: int


def _line(label: str, text: str) -> None:
    print(f"  {label:<34} {text}")


def _ratio(label: str, per_round: list[float], target: str | None = None) -> None:
    spread = ", ".join(f"{value:.2f}" for value in per_round)
    goal = f"; target {target}" if target else ""
    _line(label, f"{float(np.median(per_round)):5.2f}  (rounds: {spread}{goal})")


def _throughput(result: LoadResult, tokens: int) -> str:
    return (
        f"{result.sequences_per_second:7.1f} seq/s {tokens / result.seconds:8.0f} tokens/s   "
        f"latency p50 {result.latency_ms(50):.0f} ms, p95 {result.latency_ms(95):.0f}, "
        f"p99 {result.latency_ms(99):.0f}   errors {result.errors}"
    )


def _cpu(loads: list[Served]) -> str:
    """Server CPU per request and per sequence, the event loop's and the workers'; then the
    load generator's, which shares the machine."""
    requests = sum(len(load.load.latencies) for load in loads)
    sequences = sum(load.load.sequences for load in loads)

    def per(seconds: float) -> str:
        return f"{seconds / requests * 1000:6.2f} ms/request ({seconds / sequences * 1000:5.2f} ms/seq)"

    client = f"client {per(sum(load.client_cpu for load in loads))}"
    if any(load.cpu is None for load in loads):
        return f"server not measured (bench did not start it), {client}"
    loop = sum(load.cpu.event_loop for load in loads)
    workers = sum(load.cpu.workers for load in loads)
    return f"event loop {per(loop)}, workers {per(workers)}, {client}"


def _server(name: str, rounds: list[Round], options: BenchOptions, tokens: int) -> None:
    batched = [r.server[name] for r in rounds]
    single = [r.single[name] for r in rounds]
    shape, single_shape = f"{options.concurrency} x {options.items_per_request}", f"{options.single_concurrency} x 1"
    for label, loads in ((shape, batched), (single_shape, single)):
        counts = ServerCounts.combine([load.counts for load in loads])
        _line(f"throughput, {label}", _throughput(LoadResult.combine([load.load for load in loads]), tokens))
        _line(f"CPU, {label}", _cpu(loads))
        calls = f"{counts.batches:.0f} engine calls of {counts.sequences / max(counts.batches, 1):.1f} sequences"
        _line(f"batches, {label}", f"{calls}, padding {counts.padding_ratio:.1%} of computed tokens")
    pairs = zip(single, batched, strict=True)
    per_round = [s.load.sequences_per_second / b.load.sequences_per_second for s, b in pairs]
    _ratio(f"{single_shape} / {shape} throughput", per_round, ">= 0.90")


def report(
    options: BenchOptions,
    precision: str,
    rounds: list[Round],
    single: LoadResult,
    probes: list[EngineRun],
    engine_batch1: np.ndarray,
) -> None:
    tokens = sum(r.tokens for r in rounds)
    counts = ServerCounts.combine([r.server["server"].counts for r in rounds])
    engine = EngineRun.combine([r.engine for r in rounds])
    sizes = ", ".join(f"<={float(bound):.0f}: {n:.0f}" for bound, n in counts.batch_sizes.items() if n)
    engine_p50 = float(np.median(engine_batch1) * 1000)
    server_parts = ", ".join(
        f"{header[2:-5].lower()} {single.server_median_ms(header):.1f}" for header in TIMING_HEADERS
    )
    print(f"\nall {len(rounds)} rounds together")
    print("server (rewardserve serve)")
    _server("server", rounds, options, tokens)
    _line("engine calls", f"{counts.batches:.0f}, {counts.sequences / max(counts.batches, 1):.1f} sequences on average")
    _line("batch sizes", sizes)
    _line("1-item requests, idle server", f"p50 {single.latency_ms(50):.1f} ms, p99 {single.latency_ms(99):.1f} ms")
    _line("  server's own p50 (ms)", server_parts)
    if options.versus:
        print(f"versus: the server run from {options.versus}")
        _server("versus", rounds, options, tokens)
    print("raw engine (ONNX Runtime alone, same sequences, length-sorted)")
    _line("probe (seq/s)", ", ".join(f"batch {p.batch_size}: {p.sequences_per_second:.1f}" for p in probes))
    _line(
        f"best batch, {engine.batch_size}",
        f"{engine.sequences_per_second:7.1f} seq/s {engine.tokens_per_second:8.0f} tokens/s   "
        f"padding {engine.padding_ratio:.1%}",
    )
    _line("batch 1, same items as 1-item requests", f"p50 {engine_p50:.1f} ms")
    has_naive = all(r.naive is not None for r in rounds)
    if has_naive:
        print("naive baseline (FastAPI + transformers, one forward pass per request)")
        _line("throughput", _throughput(LoadResult.combine([r.naive for r in rounds]), tokens))
    _ratios(options, precision, rounds, has_naive, counts, single.latency_ms(50) / engine_p50)


def _ratios(
    options: BenchOptions, precision: str, rounds: list[Round], has_naive: bool, counts: ServerCounts, latency: float
) -> None:
    print("ratios, median of the rounds")

    def server_rate(r: Round, name: str = "server") -> float:
        return r.server[name].load.sequences_per_second

    _ratio("server / engine throughput", [server_rate(r) / r.engine.sequences_per_second for r in rounds], ">= 0.90")
    if has_naive:
        target = 4 if precision == "int8" else 2
        per_round = [server_rate(r) / r.naive.sequences_per_second for r in rounds]
        _ratio("server / naive throughput", per_round, f">= {target} for {precision}")
    if options.versus:
        shape = f"{options.concurrency} x {options.items_per_request}"
        _ratio(f"server / versus, {shape}", [server_rate(r) / server_rate(r, "versus") for r in rounds])
        per_round = [
            r.single["server"].load.sequences_per_second / r.single["versus"].load.sequences_per_second for r in rounds
        ]
        _ratio(f"server / versus, {options.single_concurrency} x 1", per_round)
    _line("padding", f"{counts.padding_ratio:5.1%}  (target <= 10%)")
    _line("1-item p50 / engine batch-1 p50", f"{latency:5.2f}  (target <= 1.3)")
