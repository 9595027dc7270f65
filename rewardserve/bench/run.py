"""`rewardserve bench`: one run, every measurement on the same HH sequences, one report.

Each round sends its own slice of the sequences to the server in the two load shapes RL
trainers send (`--concurrency` clients x `--items` items, and OpenRLHF's and verl's one sample
per request from `--single-concurrency` clients), then to the raw engine and the naive server;
with `--versus DIR` also to a server run from another checkout (e.g. a worktree of the commit
before a change). Rounds interleave all of them, so that the machine's drift over minutes hits
each alike. For servers it started, it reads their CPU time per request from /proc: the event
loop's (where HTTP, JSON, validation, middleware, logging, metrics and futures cost) apart from
the workers' (tokenizer, engine).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewardserve.bench.engine import batch1_latencies, probe_batch_sizes, sorted_run
from rewardserve.bench.load import one_at_a_time, run_load, scrape, server_counts
from rewardserve.bench.options import BenchOptions, Served
from rewardserve.bench.process import CpuTime, ServerProcess, free_port, rewardserve_process, server_process
from rewardserve.bench.report import Round, report
from rewardserve.bench.workload import Item, hh_items
from rewardserve.bundle import BundleRuntime, EncodedSequence, load_bundle
from rewardserve.bundle.cpus import available_cpus

MAX_TOKENS = 512  # HH items up to this untruncated length, as the workload
WARM_UP = 256  # sequences sent under full load before measuring: first calls at new shapes are slow


@dataclass(frozen=True)
class Target:
    """A server under load: its name in the report, its URL, its process when we started it."""

    name: str
    url: str
    process: ServerProcess | None

    def cpu(self) -> CpuTime | None:
        return self.process.cpu_seconds() if self.process else None


def serve_load(target: Target, items: list[Item], concurrency: int, per_request: int, label: str) -> Served:
    before, cpu_before = scrape(target.url), target.cpu()
    client_before = time.process_time()
    load = run_load(target.url, items, concurrency, per_request, label)
    client_cpu = time.process_time() - client_before
    cpu_after = target.cpu()
    cpu = cpu_after - cpu_before if cpu_after and cpu_before else None
    return Served(load, server_counts(before, scrape(target.url)), cpu, client_cpu)


@contextlib.contextmanager
def _target(name: str, process: contextlib.AbstractContextManager[ServerProcess]) -> Iterator[Target]:
    with process as server:
        yield Target(name, server.url, server)


def _naive(checkpoint: Path, max_length: int) -> contextlib.AbstractContextManager[ServerProcess]:
    port = free_port()
    command = [sys.executable, "-m", "rewardserve.bench.naive_server", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), "--max-length", str(max_length)]
    return server_process(command, port, "naive baseline server")


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
    # Disjoint sets, so that no measured request is answered from a server's cache.
    n = options.sequences
    needed = WARM_UP + 2 * n + options.single_requests
    if len(items) < needed:
        raise SystemExit(f"rewardserve: only {len(items)} distinct HH items, {needed} asked for")
    warm_up, batched, single_shape, idle = (
        items[:WARM_UP],
        items[WARM_UP : WARM_UP + n],
        items[WARM_UP + n : WARM_UP + 2 * n],
        items[WARM_UP + 2 * n : needed],
    )
    sequences = runtime.encoder.encode([i["prompt"] for i in batched], [i["response"] for i in batched])
    lengths = np.array([len(s) for s in sequences])
    print(
        f"rewardserve bench: {manifest.name} ({runtime.choice.precision}: {runtime.choice.reason}), "
        f"{runtime.machine.describe()}, {available_cpus()} CPUs; "
        f"{len(batched)} distinct HH sequences (tokens mean {lengths.mean():.0f}, max {lengths.max()} "
        f"after the bundle's {manifest.input_format.max_length}-token truncation); "
        f"{options.concurrency} clients x {options.items_per_request} items, "
        f"and {options.single_concurrency} clients x 1 item",
        flush=True,
    )
    # The engine's best batch size first, on a sample, while no server is running.
    probes = probe_batch_sizes(runtime, sequences)
    best_batch = max(probes, key=lambda run: run.sequences_per_second).batch_size
    checkpoint = _baseline_checkpoint(options, manifest.provenance)
    with contextlib.ExitStack() as stack:
        if options.url:
            targets = [Target("server", options.url, None)]
        else:
            targets = [stack.enter_context(_target("server", rewardserve_process(options.bundle)))]
        if options.versus:
            versus = rewardserve_process(options.bundle, source=options.versus)
            targets.append(stack.enter_context(_target("versus", versus)))
        naive = stack.enter_context(_naive(checkpoint, manifest.input_format.max_length)) if checkpoint else None
        for target in targets:
            run_load(target.url, warm_up, options.concurrency, options.items_per_request, f"{target.name} warm-up")
        if naive:
            run_load(naive.url, warm_up, options.concurrency, options.items_per_request, "baseline warm-up")
        workload = Workload(batched, single_shape, sequences, lengths, runtime, best_batch)
        rounds = [
            _round(number, indices, options, workload, targets, naive)
            for number, indices in enumerate(np.array_split(np.arange(n), options.rounds), 1)
        ]
        single = one_at_a_time(targets[0].url, idle, "1-item requests")
    idle_sequences = runtime.encoder.encode([i["prompt"] for i in idle], [i["response"] for i in idle])
    engine_batch1 = batch1_latencies(runtime, idle_sequences)
    report(options, runtime.choice.precision, rounds, single, probes, engine_batch1)
    return 0


@dataclass(frozen=True)
class Workload:
    batched: list[Item]  # for the concurrency x items shape, the engine and the naive server
    single: list[Item]  # as many others, for one sample per request
    sequences: list[EncodedSequence]  # `batched`, encoded
    lengths: np.ndarray
    runtime: BundleRuntime
    best_batch: int


def _round(
    number: int,
    indices: np.ndarray,
    options: BenchOptions,
    workload: Workload,
    targets: list[Target],
    naive: ServerProcess | None,
) -> Round:
    """Round `number`: its slice of the sequences through every server in both shapes, the raw
    engine and the naive server, one after the other."""
    chunk = [workload.batched[i] for i in indices]
    singles = [workload.single[i] for i in indices]
    batched, single = f"{options.concurrency}x{options.items_per_request}", f"{options.single_concurrency}x1"
    loads, single_loads = {}, {}
    for target in targets:
        label = f"round {number}: {target.name} {batched}"
        loads[target.name] = serve_load(target, chunk, options.concurrency, options.items_per_request, label)
        label = f"round {number}: {target.name} {single}"
        single_loads[target.name] = serve_load(target, singles, options.single_concurrency, 1, label)
    selected = [workload.sequences[i] for i in indices]
    engine = sorted_run(workload.runtime, selected, workload.best_batch, f"round {number}: engine")
    naive_load = None
    if naive:
        label = f"round {number}: naive baseline"
        naive_load = run_load(naive.url, chunk, options.concurrency, options.items_per_request, label)
    return Round(loads, single_loads, engine, naive_load, int(workload.lengths[indices].sum()))
