"""What composing costs, and what serving two models from one process costs.

    python benchmarks/composed_cost.py --bundle models/bench-minilm/bundle   # ~2 min on 2 cores

1. A composed reward on GRPO groups: one `/get_reward` call per group (a prompt and G responses,
   each with a reference answer as its label), one call at a time, against what each component
   costs alone on the same group in the same server: the two models (`"model": NAME`) and the
   math-verify rule (a second server whose spec holds only the rule). The composed reward runs
   its components at once; the target is a median at most the sum of the components' medians
   plus 5%. Calls take turns group by group, so machine noise hits each kind alike.
2. Two models in one server against two single-model servers on the same CPUs: the same
   concurrent `/score` load sent to each model at once, sequences per second side by side.

The two models are the same bundle served twice under two names (two engines, two batchers):
their cost is what matters here, not their weights. Rewards are uncached (CACHE_SIZE=0).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from tqdm import tqdm

from rewardserve.bench.load import run_together
from rewardserve.bench.process import ServerProcess, rewardserve_process
from rewardserve.bench.workload import hh_items
from rewardserve.bundle import BundleRuntime

SPEC = """
name = "composed"
{models}
[components.correct]
type = "math"
"""
MODELS = """
[components.helpful]
type = "model"
model = "helpful"

[components.safety]
type = "model"
model = "safety"
"""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("models/default/bundle"))
    parser.add_argument("--group", type=int, default=8, help="responses per GRPO group")
    parser.add_argument("--groups", type=int, default=60, help="groups timed, each by every kind")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients per model in part 2")
    parser.add_argument("--items", type=int, default=1536, help="sequences per model in part 2")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    items = hh_items(BundleRuntime(args.bundle).encoder, max_tokens=256)
    with tempfile.TemporaryDirectory() as work:
        composed_cost(args, items, Path(work))
    two_models(args, items)


@contextlib.contextmanager
def server(bundle: Path, work: Path, spec: str | None, *, alone: bool = False) -> Iterator[ServerProcess]:
    """A server of `bundle` as "helpful" (and as "safety" unless `alone`), with `spec` composed."""
    env = {"REWARDSERVE_CACHE_SIZE": "0", "REWARDSERVE_SERVED_MODEL_NAME": "helpful"}
    if not alone:
        env["REWARDSERVE_MODELS"] = f'{{"safety": "{bundle.resolve()}"}}'
    if spec is not None:
        path = work / f"spec-{time.monotonic_ns()}.toml"
        path.write_text(spec)
        env["REWARDSERVE_REWARD_SPEC"] = str(path)
    with rewardserve_process(bundle, env) as process:
        yield process


def groups(items: list[dict], size: int, count: int) -> list[dict]:
    """`/get_reward` bodies: a prompt and `size` responses (its own and others'), labels "42"."""
    bodies = []
    for g in range(count):
        prompt = items[g * size]["prompt"]
        responses = [item["response"] for item in items[g * size : (g + 1) * size]]
        queries = [prompt + response for response in responses]
        bodies.append({"query": queries, "prompts": [prompt] * size, "labels": ["42"] * size, "policy_format": "raw"})
    return bodies


def composed_cost(args: argparse.Namespace, items: list[dict], work: Path) -> None:
    bodies = groups(items, args.group, args.groups)
    kinds = {"helpful": {"model": "helpful"}, "safety": {"model": "safety"}, "composed": {}}
    times: dict[str, list[float]] = {kind: [] for kind in [*kinds, "math rule"]}
    with (
        server(args.bundle, work, SPEC.format(models=MODELS)) as full,
        server(args.bundle, work, SPEC.format(models=""), alone=True) as rule,
        httpx.Client(timeout=600) as client,
    ):
        urls = {"helpful": full.url, "safety": full.url, "composed": full.url, "math rule": rule.url}
        for body in tqdm(bodies[:4], desc="warm-up", leave=False):
            for kind, url in urls.items():
                client.post(f"{url}/get_reward", json={**body, **kinds.get(kind, {})}).raise_for_status()
        for body in tqdm(bodies, desc="groups, each kind in turn", unit="group"):
            for kind, url in urls.items():
                started = time.perf_counter()
                client.post(f"{url}/get_reward", json={**body, **kinds.get(kind, {})}).raise_for_status()
                times[kind].append(time.perf_counter() - started)
    medians = {kind: statistics.median(values) * 1000 for kind, values in times.items()}
    alone = medians["helpful"] + medians["safety"] + medians["math rule"]
    print(
        f"\nA composed reward on GRPO groups of {args.group} (/get_reward, one call at a time, "
        f"medians of {args.groups})"
    )
    print("| what | ms per group |\n| --- | --- |")
    for kind in ("helpful", "safety", "math rule"):
        print(f"| {kind} alone | {medians[kind]:.1f} |")
    print(f"| sum of the components alone | {alone:.1f} |")
    ratio = medians["composed"] / alone
    verdict = "met" if ratio <= 1.05 else "not met"
    composed = medians["composed"]
    print(
        f"| composed (two models + math-verify) | {composed:.1f} ({ratio:.2f}x the sum; target <= 1.05x: {verdict}) |"
    )


def two_models(args: argparse.Namespace, items: list[dict]) -> None:
    requests = [items[i : i + 8] for i in range(0, args.items, 8)]
    apis = {
        name: ("/score", lambda chunk, name=name: {"items": chunk, "model": name}) for name in ("helpful", "safety")
    }
    with tempfile.TemporaryDirectory() as work:
        with server(args.bundle, Path(work), None) as one:
            loads = [(one.url, requests, args.clients, f"one server: {name}", apis[name]) for name in apis]
            together = run_together(loads)
        with (
            server(args.bundle, Path(work), None, alone=True) as a,
            server(args.bundle, Path(work), None, alone=True) as b,
        ):
            pairs = zip(apis, (a.url, b.url), strict=True)
            loads = [(url, requests, args.clients, f"own server: {name}", apis["helpful"]) for name, url in pairs]
            apart = run_together(loads)
    print(
        f"\nTwo models under the same load at once ({args.clients} clients x 8 items each, {args.items} sequences each)"
    )
    print("| | helpful seq/s | safety seq/s | total seq/s |\n| --- | --- | --- | --- |")
    for label, results in (("one server, two models", together), ("two single-model servers", apart)):
        rates = [r.sequences / r.seconds for r in results]
        total = sum(r.sequences for r in results) / max(r.seconds for r in results)
        print(f"| {label} | {rates[0]:.1f} | {rates[1]:.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()
