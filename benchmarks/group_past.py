"""A GRPO group's responses after one copy of their prompt's keys and values, broadcast to the
call's rows inside OpenVINO's graph, against a copy per row (what the engine fed before):
sequences/s of one call of G responses, and how much memory the call took beyond what the
process held before it (its peak resident set, reset before each call through /proc's clear_refs).

    python benchmarks/group_past.py --bundle models/real-size/qwen3-0.6b/bundle-auto-2048   # ~10 min

The bundle is served at `--precision` (default `auto`: w8a8 where export shipped it) in two
sessions side by side, one with `OpenVinoSession.BROADCAST_PAST` off. Each group is a held-out
prompt of about P tokens and G held-out responses of 100-300 tokens (prefix_served.py's
groups); its prompt runs once, then its G responses in one call on each session, in turns. The
rewards of both are checked bit-identical. Also printed: how many rows one call may take after
a P-token prompt under the kept prompts' default budget (SharedPrompts.max_rows), each way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from prefix_served import held_out_texts, make_groups

from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.memory import available_memory
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.prefix import prompt_ids
from rewardserve.scoring.shared_prompts import SharedPrompts, kept_prompts_budget

SETTINGS = ["300x8", "300x16", "1000x8", "1000x16"]


def resident(field: str) -> int:
    """VmRSS or VmHWM (the peak since the last reset) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def timed_call(prefix, states, tails) -> tuple[float, int, np.ndarray]:
    """(seconds, bytes the call took beyond the resident set before it, rewards)."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from now
    before = resident("VmRSS")
    started = time.perf_counter()
    rewards = prefix.score_responses(states, tails, prefix.runner.length_bucket).rewards
    return time.perf_counter() - started, resident("VmHWM") - before, rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--settings", nargs="+", default=SETTINGS, help="PxG: prompt tokens x responses")
    parser.add_argument("--groups", type=int, default=3, help="groups a setting")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    sessions = {}
    for broadcast in (True, False):
        OpenVinoSession.BROADCAST_PAST = broadcast
        runtime = BundleRuntime(args.bundle, precision=args.precision, prefix_reuse=True)
        sessions["one copy" if broadcast else "a copy a row"] = runtime.prefix
    OpenVinoSession.BROADCAST_PAST = True
    assert sessions["one copy"].broadcasts and not sessions["a copy a row"].broadcasts, "no broadcast"
    print(f"{args.bundle} at {runtime.choice.precision}, {os.cpu_count()} CPUs")
    prefix = sessions["one copy"]
    budget = kept_prompts_budget(prefix.bytes_per_token, runtime.manifest.input_format.max_length, available_memory())
    texts = held_out_texts()
    figures: dict[str, dict] = {}
    for setting in args.settings:
        prompt_tokens, size = map(int, setting.split("x"))
        groups = make_groups(runtime, prompt_tokens, size, args.groups + 1, texts)  # the first warms up
        rates = {name: [] for name in sessions}
        extra = {name: [] for name in sessions}
        for number, group in enumerate(groups):
            sequences = runtime.encoder.encode([group["prompt"]] * size, group["responses"])
            states = prefix.prompt_states(prompt_ids(sequences[0]))
            tails = [s.ids[states.length :] for s in sequences]
            answers = {}
            for name in list(sessions)[:: 1 if number % 2 else -1]:  # each way first in turn
                seconds, memory, answers[name] = timed_call(sessions[name], states, tails)
                if number:
                    rates[name].append(size / seconds)
                    extra[name].append(memory)
            assert np.array_equal(*answers.values()), "the two ways' rewards differ"
        rows = {
            name: SharedPrompts(64, budget, 30, p.row_bytes_per_token).max_rows(states.length)
            for name, p in sessions.items()
        }
        figures[setting] = {
            "prompt_tokens": states.length,
            "seq_per_s": {name: statistics.median(r) for name, r in rates.items()},
            "call_memory_mib": {name: max(m) / 2**20 for name, m in extra.items()},
            "max_rows": rows,
        }
        f = figures[setting]
        ratio = f["seq_per_s"]["one copy"] / f["seq_per_s"]["a copy a row"]
        print(
            f"P={states.length} G={size}: one copy {f['seq_per_s']['one copy']:.2f} seq/s, "
            f"a copy a row {f['seq_per_s']['a copy a row']:.2f} ({ratio:.2f}x); the call's memory "
            f"{f['call_memory_mib']['one copy']:.0f} against {f['call_memory_mib']['a copy a row']:.0f} MiB; "
            f"rows a call under the default {budget // 2**20} MiB budget: {rows['one copy']} against "
            f"{rows['a copy a row']}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
