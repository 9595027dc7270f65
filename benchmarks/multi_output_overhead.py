"""What objectives and step rewards cost a served request: one backbone, three heads.

    cd benchmarks && python multi_output_overhead.py      # ~3 min on 2 cores

Builds a Qwen3-shaped chat RM (rewardserve/testing/chat_models.py, 2 layers, hidden 256, random weights)
three times, alike but for the head: a scalar head, a head of 19 objectives (ArmoRM's count; the reward their
mean), and a two-class token classifier read at `<extra_0>` (a process reward model). Exports
each, then scores the same held-out HH conversations (their responses cut into steps for the
PRM) through each bundle's whole in-process pipeline (validate, tokenize, batch, engine,
respond: the server without HTTP), 8 items a request, 32 requests at once, the three bundles
taking turns pass by pass. Prints each pass's median sequences per second and its ratio to
the scalar head's, so machine noise hits all three alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from rewardserve.data.hh import default_data_files, prompt_turns
from rewardserve.data.preferences import load_preferences
from rewardserve.export.onnx_export import export_bundle, stepped
from rewardserve.export.source import OutputOptions
from rewardserve.scoring.build import bundle_pipeline
from rewardserve.scoring.context import RequestContext
from rewardserve.service import Settings
from rewardserve.service.endpoints.score import Score, ScoreRequest
from rewardserve.testing.chat_models import STEP_SEPARATOR, build_chat_rm, build_prm

OBJECTIVES = [f"objective_{i}" for i in range(19)]


def build(work: Path, texts: list[str], hidden: int) -> dict[str, tuple[Path, OutputOptions]]:
    """The three checkpoints: the same shapes (random weights are fine for speed)."""
    return {
        "scalar": (build_chat_rm("qwen3", work / "scalar", texts, hidden), OutputOptions()),
        "19 objectives": (
            build_chat_rm("qwen3", work / "objectives", texts, hidden, labels=OBJECTIVES),
            OutputOptions(reward_weights=[1 / 19] * 19),
        ),
        "step rewards": (build_prm(work / "prm", texts, hidden), OutputOptions(step_separator=STEP_SEPARATOR)),
    }


async def passes(
    bundles: dict[str, Path], bodies: dict[str, list[ScoreRequest]], rounds: int
) -> dict[str, list[float]]:
    pipelines = {name: bundle_pipeline(Settings(bundle=path, cache_size=0)) for name, path in bundles.items()}
    for pipeline in pipelines.values():
        await pipeline.start()
    rates: dict[str, list[float]] = {name: [] for name in bundles}
    try:
        for _ in range(rounds):
            for name, pipeline in pipelines.items():
                started = time.perf_counter()
                await asyncio.gather(
                    *(pipeline(RequestContext("bench", time.perf_counter()), Score(), body) for body in bodies[name])
                )
                sequences = sum(len(body.items) for body in bodies[name])
                rates[name].append(sequences / (time.perf_counter() - started))
    finally:
        for pipeline in pipelines.values():
            await pipeline.stop()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("../models/multi-output"))
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--conversations", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    files = default_data_files()[:1]
    train, _ = load_preferences(files, split="train")
    heldout, _ = load_preferences(files, split="heldout")
    texts = [e.prompt + r for e in train[:200] for r in e.responses]
    parity = [(e.prompt, r) for e in heldout[:64] for r in e.responses]
    bundles = {}
    for name, (checkpoint, options) in build(args.work, texts, args.hidden_size).items():
        bundles[name] = args.work / "bundles" / checkpoint.name
        if not (bundles[name] / "manifest.json").is_file():
            export_bundle(checkpoint, bundles[name], parity, max_length=1024, output_options=options)

    examples = [e for e in heldout if len(e.prompt) + len(e.responses[0]) < 1500][: args.conversations]
    chats = [(prompt_turns(e.prompt), e.responses[0]) for e in examples]

    def item(prompt: list[dict], response: str) -> dict:
        return {"messages": [*prompt, {"role": "assistant", "content": response}]}

    items = {
        "scalar": [item(p, r) for p, r in chats],
        "19 objectives": [item(p, r) for p, r in chats],
        "step rewards": [item(p, stepped(r, STEP_SEPARATOR)) for p, r in chats],
    }
    bodies = {name: [ScoreRequest(items=its[i : i + 8]) for i in range(0, len(its), 8)] for name, its in items.items()}
    rates = asyncio.run(passes(bundles, bodies, args.rounds))
    base = statistics.median(rates["scalar"])
    print(f"\n{len(chats)} HH conversations, /score 8 items a request, 32 at once; median of {args.rounds} passes")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:>14}: {median:7.1f} seq/s  ({median / base:.2f}x the scalar head)")


if __name__ == "__main__":
    main()
