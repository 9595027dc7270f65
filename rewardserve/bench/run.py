"""`rewardserve bench`: one run, three measurements on the same HH sequences, one report."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewardserve.bench.engine import EngineRun, batch1_latencies, probe_batch_sizes, sorted_run
from rewardserve.bench.load import (
    TIMING_HEADERS,
    LoadResult,
    ServerCounts,
    one_at_a_time,
    run_load,
    scrape,
    server_counts,
)
from rewardserve.bench.process import ServerProcess, free_port, rewardserve_process, server_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime, load_bundle
from rewardserve.bundle.cpus import available_cpus

MAX_TOKENS = 512  # HH items up to this untruncated length, as the workload
WARM_UP = 256  # sequences sent under full load before measuring: first calls at new shapes are slow


@dataclass
class BenchOptions:
    bundle: Path
    url: str | None = None
    concurrency: int = 64
    items_per_request: int = 8
    sequences: int = 2048
    single_requests: int = 64
    baseline_checkpoint: Path | None = None
    baseline: bool = True
    rounds: int = 3


def _rewardserve(bundle: Path) -> contextlib.AbstractContextManager[str]:
    return _url(rewardserve_process(bundle))


@contextlib.contextmanager
def _url(process: contextlib.AbstractContextManager[ServerProcess]) -> Iterator[str]:
    with process as server:
        yield server.url


def _naive(checkpoint: Path, max_length: int) -> contextlib.AbstractContextManager[str]:
    port = free_port()
    command = [sys.executable, "-m", "rewardserve.bench.naive_server", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), "--max-length", str(max_length)]
    return _url(server_process(command, port, "naive baseline server"))


def _baseline_checkpoint(options: BenchOptions, provenance: dict) -> Path | None:
    if not options.baseline:
        return None
    if options.baseline_checkpoint:
        return options.baseline_checkpoint
    name = provenance.get("export", {}).get("checkpoint")  # the folder export read, beside the bundle
    guess = options.bundle.parent / name if name else None
    return guess if guess and guess.is_dir() else None


def bench(options: BenchOptions) -> int:
    manifest = load_bundle(options.bundle)
    runtime = BundleRuntime(options.bundle, manifest)
    items = hh_items(runtime.encoder, MAX_TOKENS)
    # Three disjoint sets, so that no measured request is answered from the server's cache.
    needed = WARM_UP + options.sequences + options.single_requests
    if len(items) < needed:
        raise SystemExit(f"rewardserve: only {len(items)} distinct HH items, {needed} asked for")
    warm_up, items = items[:WARM_UP], items[WARM_UP:needed]
    load_items, single_items = items[: options.sequences], items[options.sequences :]
    pairs = runtime.encoder.encode([i["prompt"] for i in load_items], [i["response"] for i in load_items])
    single_pairs = runtime.encoder.encode([i["prompt"] for i in single_items], [i["response"] for i in single_items])
    lengths = np.array([len(p) for p in pairs])
    print(
        f"rewardserve bench: {manifest.name} ({manifest.precision}), {available_cpus()} CPUs; "
        f"{len(load_items)} distinct HH sequences (tokens mean {lengths.mean():.0f}, max {lengths.max()} "
        f"after the bundle's {manifest.input_format.max_length}-token truncation); "
        f"{options.concurrency} clients x {options.items_per_request} items",
        flush=True,
    )

    # The engine's best batch size first, on a sample, while no server is running.
    probes = probe_batch_sizes(runtime, pairs)
    best_batch = max(probes, key=lambda run: run.sequences_per_second).batch_size
    # Then the three side by side: each round sends its own slice of the sequences to the
    # server, the raw engine and the naive server, one after the other, so that the machine's
    # drift over minutes hits all three alike. Idle servers cost nothing meanwhile.
    checkpoint = _baseline_checkpoint(options, manifest.provenance)
    server = contextlib.nullcontext(options.url) if options.url else _rewardserve(options.bundle)
    naive_server = _naive(checkpoint, manifest.input_format.max_length) if checkpoint else contextlib.nullcontext()
    rounds: list[Round] = []
    with server as url, naive_server as naive_url:
        run_load(url, warm_up, options.concurrency, options.items_per_request, "warm-up")
        if naive_url:
            run_load(naive_url, warm_up, options.concurrency, options.items_per_request, "baseline warm-up")
        for number, indices in enumerate(np.array_split(np.arange(len(load_items)), options.rounds), 1):
            chunk = [load_items[i] for i in indices]
            before = scrape(url)
            load = run_load(url, chunk, options.concurrency, options.items_per_request, f"round {number}: server")
            counts = server_counts(before, scrape(url))
            engine = sorted_run(runtime, [pairs[i] for i in indices], best_batch, f"round {number}: engine")
            naive = None
            if naive_url:
                label = f"round {number}: naive baseline"
                naive = run_load(naive_url, chunk, options.concurrency, options.items_per_request, label)
            rounds.append(Round(load, counts, engine, naive, int(lengths[indices].sum())))
        single = one_at_a_time(url, single_items, "1-item requests")
    engine_batch1 = batch1_latencies(runtime, single_pairs)
    _report(manifest.precision, rounds, single, probes, engine_batch1)
    return 0


@dataclass(frozen=True)
class Round:
    server: LoadResult
    counts: ServerCounts
    engine: EngineRun
    naive: LoadResult | None
    tokens: int


def _report(
    precision: str, rounds: list[Round], single: LoadResult, probes: list[EngineRun], engine_batch1: np.ndarray
) -> None:
    tokens = sum(r.tokens for r in rounds)
    server = LoadResult.combine([r.server for r in rounds])
    counts = ServerCounts.combine([r.counts for r in rounds])
    engine = EngineRun.combine([r.engine for r in rounds])
    has_naive = all(r.naive is not None for r in rounds)

    def throughput(result: LoadResult) -> str:
        return (
            f"{result.sequences_per_second:7.1f} seq/s {tokens / result.seconds:8.0f} tokens/s   "
            f"latency p50 {result.latency_ms(50):.0f} ms, p95 {result.latency_ms(95):.0f}, "
            f"p99 {result.latency_ms(99):.0f}   errors {result.errors}"
        )

    def line(label: str, text: str) -> None:
        print(f"  {label:<34} {text}")

    def ratio(label: str, per_round: list[float], target: str) -> None:
        spread = ", ".join(f"{value:.2f}" for value in per_round)
        line(label, f"{float(np.median(per_round)):5.2f}  (rounds: {spread}; target {target})")

    sizes = ", ".join(f"<={float(bound):.0f}: {n:.0f}" for bound, n in counts.batch_sizes.items() if n)
    engine_p50 = float(np.median(engine_batch1) * 1000)
    server_parts = ", ".join(
        f"{header[2:-5].lower()} {single.server_median_ms(header):.1f}" for header in TIMING_HEADERS
    )
    print(f"\nall {len(rounds)} rounds together")
    print("server (rewardserve serve)")
    line("throughput", throughput(server))
    line("padding", f"{counts.padding_ratio:.1%} of computed tokens")
    line("engine calls", f"{counts.batches:.0f}, {counts.sequences / max(counts.batches, 1):.1f} sequences on average")
    line("batch sizes", sizes)
    line("1-item requests, idle server", f"p50 {single.latency_ms(50):.1f} ms, p99 {single.latency_ms(99):.1f} ms")
    line("  server's own p50 (ms)", server_parts)
    print("raw engine (ONNX Runtime alone, same sequences, length-sorted)")
    line("probe (seq/s)", ", ".join(f"batch {p.batch_size}: {p.sequences_per_second:.1f}" for p in probes))
    line(
        f"best batch, {engine.batch_size}",
        f"{engine.sequences_per_second:7.1f} seq/s {engine.tokens_per_second:8.0f} tokens/s   "
        f"padding {engine.padding_ratio:.1%}",
    )
    line("batch 1, same items as 1-item requests", f"p50 {engine_p50:.1f} ms")
    if has_naive:
        print("naive baseline (FastAPI + transformers, one forward pass per request)")
        line("throughput", throughput(LoadResult.combine([r.naive for r in rounds])))
    print("ratios, median of the rounds")
    ratio(
        "server / engine throughput",
        [r.server.sequences_per_second / r.engine.sequences_per_second for r in rounds],
        ">= 0.90",
    )
    if has_naive:
        target = 4 if precision == "int8" else 2
        per_round = [r.server.sequences_per_second / r.naive.sequences_per_second for r in rounds]
        ratio("server / naive throughput", per_round, f">= {target} for {precision}")
    line("padding", f"{counts.padding_ratio:5.1%}  (target <= 10%)")
    line("1-item p50 / engine batch-1 p50", f"{single.latency_ms(50) / engine_p50:5.2f}  (target <= 1.3)")
