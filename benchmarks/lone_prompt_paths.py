"""Which of OpenVINO's shapes change a decoder's rewards bit for bit, and what running lone
prompts whole gains: what the rule that a prompt no other sequence shares runs whole at bf16 and
w8a8 where export measured its responses' rewards after it equal to whole rests on (responses
padded to OPENVINO_RESPONSE_BUCKET; BundleRuntime.splits_every_prompt), and the way it replaced
(each lone prompt as its own prompt call and response call).

    python benchmarks/lone_prompt_paths.py --bundle models/real-size/qwen3-0.6b/bundle-auto-2048   # ~8 min

On the bundle as served (`--precision`, its prefix graph), held-out HH conversations with
prompts of about 80 to 1,300 tokens, 3 responses each (prefix_served.py's groups):
1. a prompt's keys and values alone (padded to its bucket, as the server runs it) against in
   one call with longer prompts, padded to the longest: values that differ;
2. whole sequences padded to their bucket against padded to a multiple of 64, and to 128
   tokens more: rewards that differ;
3. each response after its prompt's keys and values, the response padded to a multiple of 16
   (the whole sequences' bucket), 32 (as served) or 64, against the whole sequence: rewards that
   differ, and the largest gap;
4. 8 lone items of 480 tokens, prompts of 100 to 400: in one whole call (as served where lone
   prompts run whole); each item's prompt call and then its response call (as served where they
   do not); and the prompts in one call, then each response.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from prefix_served import held_out_texts, make_groups

from rewardserve.bundle import BundleRuntime, EncodedSequence
from rewardserve.bundle.prefix import PromptStates, prompt_ids

WHOLE_LENGTH = 480  # part 4's items, whole


def rounded(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def prompt_states_in_one_call(runtime: BundleRuntime, prompts: list[np.ndarray]) -> list[PromptStates]:
    """Each prompt's keys and values from one call of all of them, padded to the longest."""
    prefix = runtime.prefix
    batch = runtime.encoder.pad([EncodedSequence(ids, 0) for ids in prompts], runtime.length_bucket).arrays
    answers = prefix.runner.session.run(prefix.present_names, prefix.whole(batch))
    return [
        PromptStates(len(ids), tuple(np.ascontiguousarray(a[row : row + 1, :, : len(ids)]) for a in answers))
        for row, ids in enumerate(prompts)
    ]


def invariance(runtime: BundleRuntime, groups: list[list[EncodedSequence]]) -> None:
    prefix, bucket = runtime.prefix, runtime.length_bucket
    prompts = [prompt_ids(group[0]) for group in groups]
    alone = [prefix.prompt_states(ids) for ids in prompts]
    shorter = prompts[: len(prompts) // 2]  # one call of them all would hold GBs of keys and values
    batched = prompt_states_in_one_call(runtime, shorter)
    pairs = zip(alone[: len(shorter)], batched, strict=True)
    differ = sum(int((a != b).sum()) for x, y in pairs for a, b in zip(x.arrays, y.arrays, strict=True))
    lengths = f"{len(shorter[0])}-{max(map(len, shorter))}"
    print(f"1. {len(shorter)} prompts of {lengths} tokens' keys and values, alone against in one call: {differ} differ")

    sequences = [s for group in groups for s in group]
    whole = np.array([runtime.score(runtime.encoder.pad([s], bucket)).rewards[0] for s in sequences])
    widths = {"a multiple of 64": lambda s: 64, "128 tokens more": lambda s: rounded(len(s), bucket) + 128}
    for label, width in widths.items():
        other = np.array([runtime.score(runtime.encoder.pad([s], width(s))).rewards[0] for s in sequences])
        print(f"2. {len(sequences)} whole sequences padded to {label}: {int((other != whole).sum())} rewards differ")

    # Each sequence's own prompt: a response long enough to cut its conversation keeps a shorter one.
    states = {prompt_ids(s).tobytes(): None for s in sequences}
    states = {key: prefix.prompt_states(np.frombuffer(key, np.int64)) for key in states}
    for multiple in (bucket, 32, 64):
        split = []
        for s in sequences:
            kept = states[prompt_ids(s).tobytes()]
            split.append(prefix.score_responses(kept, [s.ids[kept.length :]], multiple).rewards[0])
        gaps = np.abs(np.array(split) - whole)
        print(
            f"3. responses after their prompt, padded to a multiple of {multiple}: {int((gaps > 0).sum())} of "
            f"{len(gaps)} rewards differ from the whole sequence's, by up to {gaps.max():.2g}"
        )


def lone_items(runtime: BundleRuntime, texts) -> list[EncodedSequence]:
    """8 items of WHOLE_LENGTH tokens, prompts of 100 to 400: one 16-token bucket, as the
    server batches lone prompts' sequences; responses cut or repeated to the length."""
    items = []
    for target in np.linspace(100, 400, 8).astype(int):
        group = make_groups(runtime, int(target), 1, 1, texts)[0]
        sequence = runtime.encoder.encode([group["prompt"]], group["responses"])[0]
        start = sequence.response_start
        ids = np.concatenate([sequence.ids[:start], np.resize(sequence.ids[start:], WHOLE_LENGTH - start)])
        items.append(EncodedSequence(ids, start))
    return items


def batching(runtime: BundleRuntime, items: list[EncodedSequence], rounds: int) -> None:
    prefix, bucket = runtime.prefix, runtime.length_bucket
    names = prefix.runner.outputs.graph_outputs()

    def whole() -> None:  # every row's keys and values answered too, as the server keeps lone prompts'
        prefix.runner.session.run(names + prefix.present_names, prefix.whole(runtime.encoder.pad(items, bucket).arrays))

    def split() -> None:
        for item in items:
            states = prefix.prompt_states(prompt_ids(item))
            prefix.score_responses(states, [item.ids[states.length :]])

    def prompts_batched() -> None:
        states = prompt_states_in_one_call(runtime, [prompt_ids(item) for item in items])
        for item, kept in zip(items, states, strict=True):
            prefix.score_responses(kept, [item.ids[kept.length :]])

    ways = {
        "one whole call": whole,
        "a prompt call and a response call each": split,
        "prompts in one call": prompts_batched,
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for number in range(rounds + 1):  # the first warms up
        for name, way in ways.items():
            started = time.perf_counter()
            way()
            if number:
                seconds[name].append(time.perf_counter() - started)
    lengths = [item.response_start for item in items]
    print(f"4. 8 lone items of {WHOLE_LENGTH} tokens, prompts {lengths}: ", end="")
    print(", ".join(f"{name} {len(items) / statistics.median(s):.2f} seq/s" for name, s in seconds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runtime = BundleRuntime(args.bundle, precision=args.precision, prefix_reuse=True)
    print(f"{args.bundle} at {runtime.choice.precision}")
    texts = held_out_texts()
    groups = []
    for target in np.linspace(80, 1300, 16).astype(int):
        group = make_groups(runtime, int(target), 3, 1, texts)[0]
        groups.append(runtime.encoder.encode([group["prompt"]] * 3, group["responses"]))
    invariance(runtime, groups)
    batching(runtime, lone_items(runtime, texts), args.rounds)


if __name__ == "__main__":
    main()
