"""GRPO groups, served: G responses to each prompt scored by rewardserve with prefix reuse on
(each prompt run once) and off (every sequence whole), and by vLLM's CPU build with prefix
caching on, side by side in one run; and, on distinct HH pairs (no prompt shared), reuse on and
off against the rewardserve of an earlier commit ("today").

    python benchmarks/prefix_served.py --bundle models/real-size/qwen3-0.6b/bundle \\
        --vllm-python ../venv-vllm/bin/python --vllm-checkpoint models/real-size/qwen3-0.6b/checkpoint \\
        --today ../rewardserve-today                  # a worktree of the commit to compare with

Each group: a prompt of about P tokens (held-out HH conversations, one after another, the last
user turn cut to length) and G held-out HH responses of 100-300 tokens, all distinct, rendered
with the bundle's chat template. Sent two ways, every group of a setting in flight together:
- one K-wise `/compare` per group (`messages` and `responses`);
- G one-sample `/get_reward` requests per group, each the conversation as policy text (ChatML),
  as OpenRLHF and verl send them.
vLLM gets the same conversations, rendered, at `/classify`: a group's G in one request, or one
a request. Every server has its duplicate cache off. Figures: sequences/s of each setting
(median over its groups, each timed alone), and the ratios of those medians.

No measured sequence is sent twice to one server: each way of sending has groups of its own, and
vLLM's rewards are checked on the warm-up group. vLLM's prefix cache keeps whole sequences, so a
sequence sent again is a cache hit that computes nothing (an earlier version of this script sent
the same groups both ways, and its vLLM figures for one-sample requests were such hits).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from served_vs_vllm import vllm_api, vllm_scores

from rewardserve.bench.load import ScoreApi, run_load, run_requests, scrape
from rewardserve.bench.process import free_port, rewardserve_process, server_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.chat import render
from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.offline import score_sequences
from rewardserve.data.hh import default_data_files, prompt_turns, split_of
from rewardserve.data.preferences import load_preferences

MODES = ("compare", "get_reward")  # one /compare per group; G one-sample /get_reward requests
SETTINGS = [(300, 8), (1000, 8), (300, 16), (1000, 16)]  # (prompt tokens, responses per prompt)
RESPONSE_TOKENS = (100, 300)
VLLM_MODEL = "rm"  # the name vLLM serves the checkpoint under


def conversation_tokens(runtime: BundleRuntime, messages: list[dict]) -> int:
    fmt = runtime.manifest.input_format
    text = render(fmt.chat_template, messages, True, fmt.template_variables)
    return len(runtime.encoder.tokenizer.encode(text, add_special_tokens=False).ids)


def held_out_texts() -> tuple[Iterator[dict], list[str]]:
    """Held-out HH conversations' turns, one conversation after another, and their responses,
    in a seeded shuffle."""
    examples, _ = load_preferences(default_data_files(), split="all")
    heldout = [e for e in examples if split_of(e.prompt) == "heldout"] or examples
    random.Random(0).shuffle(heldout)
    turns = (turn for e in heldout for turn in prompt_turns(e.prompt))
    return turns, [r for e in heldout for r in e.responses]


def make_prompt(runtime: BundleRuntime, turns: Iterator[dict], target: int) -> list[dict]:
    """Turns until about `target` tokens, ending on a user turn cut to fit."""
    messages: list[dict] = []
    for turn in turns:
        if conversation_tokens(runtime, [*messages, turn]) <= target:
            messages.append(turn)
            continue
        if turn["role"] != "user":
            continue  # an assistant turn that does not fit: the next user turn is cut instead
        words = turn["content"].split(" ")
        while True:
            lo, hi = 0, len(words)
            while lo < hi:  # the most words of this user turn that stay within the target
                mid = (lo + hi + 1) // 2
                cut = {"role": "user", "content": " ".join(words[:mid])}
                if conversation_tokens(runtime, [*messages, cut]) <= target:
                    lo = mid
                else:
                    hi = mid - 1
            if lo or not messages:
                return [*messages, {"role": "user", "content": " ".join(words[: max(lo, 1)])}]
            messages.pop()  # no word fits after the last turn: cut this user turn in its place
    raise SystemExit("not enough held-out conversations for the prompts")


def make_groups(runtime: BundleRuntime, prompt_tokens: int, size: int, count: int, texts) -> list[dict]:
    turns, responses = texts
    groups = []
    for _ in range(count):
        prompt = make_prompt(runtime, turns, prompt_tokens)
        chosen = []
        while len(chosen) < size:
            response = responses.pop()
            tokens = len(runtime.encoder.tokenizer.encode(response, add_special_tokens=False).ids)
            if RESPONSE_TOKENS[0] <= tokens <= RESPONSE_TOKENS[1]:
                chosen.append(response)
        groups.append({"prompt": prompt, "responses": chosen})
    return groups


def rendered(runtime: BundleRuntime, item: dict) -> str:
    """An item's conversation as policy text: the bundle's own template (ChatML here)."""
    fmt = runtime.manifest.input_format
    messages = [*item["prompt"], {"role": "assistant", "content": item["response"]}]
    return render(fmt.chat_template, messages, False, fmt.template_variables)


def requests_of(runtime: BundleRuntime, groups: list[dict], mode: str, server: str) -> tuple[list[list], ScoreApi]:
    """Each request as a list of {prompt, response} items, and how `server` is asked for them."""
    items = [[{"prompt": g["prompt"], "response": r} for r in g["responses"]] for g in groups]
    requests = items if mode == "compare" else [[item] for group in items for item in group]
    if server == "vllm":
        return requests, vllm_api(VLLM_MODEL, runtime.manifest.input_format)
    if mode == "compare":
        return requests, (
            "/compare",
            lambda batch: {"messages": batch[0]["prompt"], "responses": [i["response"] for i in batch]},
        )
    return requests, ("/get_reward", lambda batch: {"query": [rendered(runtime, batch[0])]})


def group_rates(url: str, runtime, groups, mode: str, server: str, label: str) -> list[float]:
    """Sequences/s of each group, alone: its requests all in flight together."""
    rates = []
    for number, group in enumerate(groups, 1):
        requests, api = requests_of(runtime, [group], mode, server)
        result = run_requests(url, requests, len(requests), f"{label} group {number}", api)
        if result.errors:
            raise SystemExit(f"{label}: {result.errors} failed requests")
        rates.append(result.sequences_per_second)
    return rates


def vllm_process(python: str, checkpoint: Path, max_length: int) -> contextlib.AbstractContextManager:
    port = free_port()
    command = [python, "-m", "vllm.entrypoints.launchers.api_server.entry", "--runner", "pooling"]
    command += ["--model", str(checkpoint), "--served-model-name", VLLM_MODEL, "--dtype", "bfloat16"]
    command += ["--port", str(port), "--max-model-len", str(max_length), "--enable-prefix-caching"]
    return server_process(
        command, port, "vLLM (bf16, prefix caching)", {"VLLM_CPU_KVCACHE_SPACE": "4"}, None, "/health"
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/real-size/qwen3-0.6b/bundle"))
    parser.add_argument("--groups", type=int, default=2, help="groups per setting and way of sending")
    parser.add_argument("--settings", nargs="+", default=[f"{p}x{g}" for p, g in SETTINGS], help="PxG, e.g. 1000x8")
    parser.add_argument("--vllm-python", help="python of a virtual environment with vllm-cpu (none: no vLLM)")
    parser.add_argument("--vllm-checkpoint", type=Path, help="the bundle's checkpoint, for vLLM")
    parser.add_argument("--today", type=Path, help="a checkout of the rewardserve to compare reuse-off with")
    parser.add_argument(
        "--distinct", type=int, default=96, help="distinct HH pairs for the no-shared-prompt load, over its rounds"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the distinct load, servers' order alternating")
    parser.add_argument("--max-batch-tokens", type=int, help="REWARDSERVE_MAX_BATCH_TOKENS for every rewardserve")
    parser.add_argument(
        "--precision", default="fp32", help="REWARDSERVE_PRECISION for every rewardserve (auto: bf16 on AMX)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/vllm_figures.py reads it)")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    runtime = BundleRuntime(args.bundle, precision="fp32")
    max_length = runtime.manifest.input_format.max_length
    settings = [tuple(int(n) for n in s.split("x")) for s in args.settings]
    texts = held_out_texts()
    # Groups of their own for each way of sending: vLLM's prefix cache (and our kept prompts) would
    # otherwise answer the second way's sequences from the first's, whole sequences included.
    workloads = {(p, g, mode): make_groups(runtime, p, g, args.groups, texts) for p, g in settings for mode in MODES}
    print(f"{runtime.machine.describe()}, {available_cpus()} CPUs; {args.bundle}, precision {args.precision}")
    for (p, g, mode), groups in workloads.items():
        lengths = [len(s) for grp in groups for s in runtime.encoder.encode([grp["prompt"]] * g, grp["responses"])]
        print(f"P={p} G={g} {mode}: {args.groups} groups, sequences of {min(lengths)}-{max(lengths)} tokens")

    rates, urls, order, distinct = measure(args, runtime, workloads, texts, max_length)
    report(args, rates, urls, order, distinct, workloads)


def measure(
    args: argparse.Namespace, runtime: BundleRuntime, workloads: dict, texts: list, max_length: int
) -> tuple[dict[tuple, list[float]], dict[str, str], list[str], list]:
    """Every server's rates: distinct pairs in alternating rounds, then each setting's groups."""
    env = {"REWARDSERVE_CACHE_SIZE": "0", "REWARDSERVE_PRECISION": args.precision}
    if args.max_batch_tokens:
        env["REWARDSERVE_MAX_BATCH_TOKENS"] = str(args.max_batch_tokens)
    servers = {
        "reuse on": rewardserve_process(args.bundle, env | {"REWARDSERVE_PREFIX_REUSE": "1"}),
        "reuse off": rewardserve_process(args.bundle, env | {"REWARDSERVE_PREFIX_REUSE": "0"}),
    }
    if args.today:
        servers["today"] = rewardserve_process(args.bundle, env, source=args.today)
    rates: dict[tuple, list[float]] = {}
    with contextlib.ExitStack() as stack:
        started_servers = {name: stack.enter_context(process) for name, process in servers.items()}
        urls = {name: server.url for name, server in started_servers.items()}
        if args.vllm_python:
            try:
                urls["vLLM"] = stack.enter_context(vllm_process(args.vllm_python, args.vllm_checkpoint, max_length)).url
            except RuntimeError as error:
                print(f"vLLM with prefix caching did not start: {str(error)[-1500:]}")
        distinct = hh_items(runtime.encoder, max_tokens=max_length)[: args.distinct]
        warm_up(runtime, urls, started_servers, texts)

        # Rounds of their own items, the servers' order alternating: this VM's speed drifts.
        order = [name for name in ("today", "reuse off", "reuse on") if name in urls]
        for number, indices in enumerate(np.array_split(np.arange(len(distinct)), args.rounds)):
            chunk = [distinct[i] for i in indices]
            for name in order if number % 2 == 0 else order[::-1]:
                result = run_load(urls[name], chunk, 8, 4, f"round {number + 1}: {name}, distinct pairs")
                rates.setdefault((name, "distinct"), []).append(result.sequences_per_second)
        for (p, g, mode), groups in workloads.items():
            for name, url in urls.items():
                if name == "today":
                    continue
                before = scrape(url) if name != "vLLM" else {}
                server = "vllm" if name == "vLLM" else "rewardserve"
                started = time.perf_counter()
                label = f"{name} P={p} G={g} {mode}"
                rates[(name, p, g, mode)] = group_rates(url, runtime, groups, mode, server, label)
                if name == "reuse on":
                    after = scrape(url)
                    rates[("hits", p, g, mode)] = [
                        after.get(key, 0) - before.get(key, 0)
                        for key in ("rewardserve_prefix_hits_total", "rewardserve_prefix_tokens_saved_total")
                    ]
                    # resident and peak since start, after this setting's groups
                    rates[("memory", p, g, mode)] = list(started_servers[name].memory())
                print(f"{name} P={p} G={g} {mode}: {rates[(name, p, g, mode)]} seq/s "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip

    return rates, urls, order, distinct


def warm_up(runtime: BundleRuntime, urls: dict[str, str], started_servers: dict, texts: list) -> None:
    """Warm every server up on a group of its own, check vLLM answers our rewards, and say what each serves."""
    warm = make_groups(runtime, 300, 8, 1, texts)[0]  # a group of its own: no prompt kept for the measured ones
    for name, url in urls.items():  # warm up, and check vLLM answers the same rewards
        mode_server = "vllm" if name == "vLLM" else "rewardserve"
        requests, api = requests_of(runtime, [warm], "compare", mode_server)
        run_requests(url, requests, 1, f"{name} warm-up", api)
    if "vLLM" in urls:  # on the warm-up group, which no measured setting holds
        (items,), api = requests_of(runtime, [warm], "compare", "vllm")
        ours = runtime.encoder.encode([warm["prompt"]] * len(items), warm["responses"])
        gap = np.abs(vllm_scores(urls["vLLM"], api, items) - score_sequences(runtime, ours).rewards).max()
        print(f"vLLM bf16 against rewardserve fp32, one group: max |reward diff| {gap:.3g}")
    for name, server in started_servers.items():  # what each serves, from its start log
        said = [line for line in server.log_text().splitlines() if "engine: " in line or "prefix reuse" in line]
        print(f"{name}: " + " | ".join(line.split('"message": "')[-1][:90] for line in said))


def report(
    args: argparse.Namespace,
    rates: dict[tuple, list[float]],
    urls: dict[str, str],
    order: list[str],
    distinct: list,
    workloads: dict,
) -> None:
    """The table of medians and ratios (and the JSON vllm_figures.py reads)."""

    def median(key) -> float:
        return statistics.median(rates[key])

    print(f"\nserved sequences/s, median of {args.groups} groups a setting")
    names = [n for n in urls if n != "today"]
    print(f"{'setting':<28}" + "".join(f"{n:>12}" for n in names) + f"{'on/off':>10}" + (
        f"{'on/vLLM':>10}" if "vLLM" in names else ""))  # fmt: skip
    for p, g, mode in workloads:
        row = "".join(f"{median((n, p, g, mode)):>12.3f}" for n in names)
        row += f"{median(('reuse on', p, g, mode)) / median(('reuse off', p, g, mode)):>9.2f}x"
        if "vLLM" in names:
            row += f"{median(('reuse on', p, g, mode)) / median(('vLLM', p, g, mode)):>9.2f}x"
        hits, saved = rates[("hits", p, g, mode)]
        rss, peak = (n / 2**20 for n in rates[("memory", p, g, mode)])
        print(f"{f'P={p} G={g} {mode}':<28}{row}   ({hits:.0f} prefix hits, {saved:.0f} prompt tokens saved; "
              f"reuse on held {rss:.0f} MiB after, peak {peak:.0f})")  # fmt: skip
    print(f"\nno prompt shared: {len(distinct)} distinct HH pairs, 8 clients x 4 items, {args.rounds} rounds")
    for name in order:
        print(f"  {name:<10} {median((name, 'distinct')):.3f} seq/s (rounds: "
              + ", ".join(f"{rate:.3f}" for rate in rates[(name, "distinct")]) + ")")  # fmt: skip
    for name, base in (("reuse on", "reuse off"), ("reuse off", "today"), ("reuse on", "today")):
        if name in order and base in order:
            ratios = np.array(rates[(name, "distinct")]) / np.array(rates[(base, "distinct")])
            print(f"  {name} / {base}: {np.median(ratios):.2f}x, median of the rounds' ratios ("
                  + ", ".join(f"{r:.2f}" for r in ratios) + ")")  # fmt: skip
    sys.stdout.flush()
    if args.json:
        medians = {f"P={p} G={g} {mode}": {n: median((n, p, g, mode)) for n in names} for p, g, mode in workloads}
        flat = {" ".join(map(str, key)): values for key, values in rates.items()}
        memory = {f"P={p} G={g} {mode}": rates[("memory", p, g, mode)] for p, g, mode in workloads}
        args.json.write_text(json.dumps({"medians": medians, "rates": flat, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
