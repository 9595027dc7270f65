"""Prompt sharing in the batcher, without HTTP, on a deterministic engine: a sequence's reward is
the sum of its ids, and the engine records which prompts it ran and which it was handed kept.
(Rewards equal to whole sequences on a real model: test_prefix_reuse.py.)"""

import asyncio

import numpy as np

from rewardserve.bundle import EncodedSequence
from rewardserve.bundle.outputs import Scores
from rewardserve.bundle.prefix import PromptStates
from rewardserve.scoring.batcher import MicroBatcher
from rewardserve.scoring.metrics import Metrics
from rewardserve.scoring.shared_prompts import SharedPrompts

BYTES_PER_TOKEN = 4  # the fake states: one float per prompt token


def seq(prompt: int, prompt_length: int, response_length: int, merged: bool = False) -> EncodedSequence:
    """A sequence whose prompt is `prompt_length` tokens of id `prompt`, then a response of ones."""
    ids = np.concatenate([np.full(prompt_length, prompt), np.ones(response_length)]).astype(np.int64)
    return EncodedSequence(ids, prompt_length, merged_at_join=merged)


class PromptEngine:
    """Records each call: ("whole", lengths) or ("ran" | "kept", prompt length, response lengths)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, sequences):
        self.calls.append(("whole", [len(s) for s in sequences]))
        return np.array([s.ids.sum() for s in sequences], dtype=np.float32)

    def whole(self, sequences, keep):
        """Whole sequences, keeping the prompt states of those `keep` marks: ("whole", lengths, kept)."""
        kept = [
            PromptStates(s.response_start, (np.zeros((1, 1, s.response_start, 1), np.float32),)) if k else None
            for s, k in zip(sequences, keep, strict=True)
        ]
        self.calls.append(
            (
                "whole",
                [len(s) for s in sequences],
                [s.response_start for s, k in zip(sequences, keep, strict=True) if k],
            )
        )
        return Scores(np.array([s.ids.sum() for s in sequences], dtype=np.float32)), kept

    def responses(self, states, sequences):
        start = sequences[0].response_start
        assert all(np.array_equal(s.ids[: s.response_start], sequences[0].ids[:start]) for s in sequences)
        kind = "kept" if states is not None else "ran"
        states = states or PromptStates(start, (np.zeros((1, 1, start, 1), np.float32),))
        self.calls.append((kind, states.length, [len(s) - start for s in sequences]))
        return Scores(np.array([s.ids.sum() for s in sequences], dtype=np.float32)), states


def shared(metrics=None, max_bytes=10**6, ttl=60.0, clock=None, min_tokens=16, response_bucket=1) -> SharedPrompts:
    kwargs = {"clock": clock} if clock else {}
    kwargs["response_bucket"] = response_bucket
    return SharedPrompts(min_tokens, max_bytes, ttl, BYTES_PER_TOKEN, metrics, **kwargs)


async def run_with(
    engine, prompts: SharedPrompts, work, max_batch_size=8, max_batch_tokens=10_000, metrics=None, length_bucket=1
):
    batcher = MicroBatcher(
        engine, max_batch_size, max_batch_tokens, metrics, shared_prompts=prompts, length_bucket=length_bucket
    )
    batcher.start()
    try:
        return await work(batcher)
    finally:
        await batcher.stop()


def sample(metrics: Metrics, name: str, labels: dict | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_each_prompt_runs_once_for_its_responses_and_short_or_merged_prompts_run_whole():
    engine, metrics = PromptEngine(), Metrics()
    sequences = [
        seq(7, 40, 5),
        seq(8, 50, 3),
        seq(7, 40, 9),
        seq(9, 4, 6),  # a prompt under min_prompt_tokens
        seq(8, 50, 4),
        seq(7, 40, 2, merged=True),  # its prompt tokens are not the prompt's own
        seq(7, 40, 7),
    ]

    async def work(batcher):
        return await batcher.score(sequences)

    scored = asyncio.run(run_with(engine, shared(metrics), work, metrics=metrics))
    assert scored.scores.rewards.tolist() == [float(s.ids.sum()) for s in sequences]
    assert sorted(engine.calls, key=str) == sorted(
        [("ran", 40, [5, 7, 9]), ("ran", 50, [3, 4]), ("whole", [10, 42])], key=str
    )
    assert sample(metrics, "rewardserve_prefix_prompts_total") == 2
    assert sample(metrics, "rewardserve_prefix_hits_total") == 2 + 1  # each prompt's first response is no hit
    assert sample(metrics, "rewardserve_prefix_tokens_saved_total") == 2 * 40 + 50
    for reason in ("short_prompt", "merged_at_join"):
        assert sample(metrics, "rewardserve_prefix_whole_sequences_total", {"reason": reason}) == 1


def test_a_prompt_kept_from_an_earlier_batch_serves_later_requests_without_running_again():
    engine, metrics = PromptEngine(), Metrics()

    async def work(batcher):
        await batcher.score([seq(7, 40, 5)])  # one sample a request, as OpenRLHF sends
        await batcher.score([seq(7, 40, 6)])
        await batcher.score([seq(7, 40, 8)])

    asyncio.run(run_with(engine, shared(metrics), work, metrics=metrics))
    # The first, whose prompt nobody else had, ran whole in one call, its prompt's states kept from it.
    assert engine.calls == [("whole", [45], [40]), ("kept", 40, [6]), ("kept", 40, [8])]
    assert sample(metrics, "rewardserve_prefix_prompts_total") == 1
    assert sample(metrics, "rewardserve_prefix_hits_total") == 2


def test_lone_prompts_run_whole_batched_with_other_whole_sequences_and_are_kept():
    """Distinct traffic (no prompt shared) runs as with prompt reuse off: whole sequences in
    length-grouped batches, not one prompt and one response call per sequence."""
    engine, metrics = PromptEngine(), Metrics()

    async def work(batcher):
        first = await batcher.score([seq(7, 40, 5), seq(8, 40, 6), seq(9, 4, 6)])  # lone, lone, short
        again = await batcher.score([seq(8, 40, 9)])  # a sibling of 8 arrives
        return first, again

    first, again = asyncio.run(run_with(engine, shared(metrics), work, metrics=metrics))
    assert engine.calls == [("whole", [10, 45, 46], [40, 40]), ("kept", 40, [9])]
    assert first.scores.rewards.tolist() == [7 * 40 + 5, 8 * 40 + 6, 9 * 4 + 6]
    assert again.scores.rewards.tolist() == [8 * 40 + 9]
    assert sample(metrics, "rewardserve_prefix_prompts_total") == 2


def test_responses_after_a_prompt_batch_by_their_own_bucket_and_whole_sequences_by_the_length_bucket():
    """Responses after a prompt are padded to the engine's response bucket, whole sequences to the
    length bucket; the two may differ, and each call holds one bucket of its own kind."""
    engine = PromptEngine()

    async def work(batcher):
        return await batcher.score([seq(7, 40, 5), seq(7, 40, 20), seq(7, 40, 40), seq(8, 3, 10), seq(9, 3, 20)])

    asyncio.run(run_with(engine, shared(response_bucket=32), work, length_bucket=16))
    assert sorted(engine.calls, key=str) == sorted(
        [("ran", 40, [5, 20]), ("kept", 40, [40]), ("whole", [13]), ("whole", [23])], key=str
    )


def test_the_token_budget_counts_the_prompt_only_when_it_must_run():
    engine = PromptEngine()

    async def work(batcher):
        return await batcher.score([seq(7, 60, 30) for _ in range(4)])

    asyncio.run(run_with(engine, shared(), work, max_batch_tokens=100))
    # 60 prompt tokens + 30 fit, a second response would not; then the kept prompt costs nothing.
    assert engine.calls == [("ran", 60, [30]), ("kept", 60, [30, 30, 30])]


def test_an_engine_call_copies_a_prompt_only_as_many_times_as_the_memory_bound_allows():
    engine = PromptEngine()
    prompts = shared(max_bytes=2 * 40 * BYTES_PER_TOKEN)  # two copies of a 40-token prompt

    async def work(batcher):
        return await batcher.score([seq(7, 40, 5) for _ in range(5)])

    asyncio.run(run_with(engine, prompts, work))
    assert [len(call[2]) for call in engine.calls] == [2, 2, 1]


def states(length: int) -> PromptStates:
    return PromptStates(length, (np.zeros(length, np.float32),))


def test_kept_prompts_are_bounded_in_memory_least_recently_used_first_out():
    prompts = shared(max_bytes=100 * BYTES_PER_TOKEN)
    prompts.put(b"a", states(40))
    prompts.put(b"b", states(40))
    assert prompts.get(b"a") is not None  # a is now the more recently used
    prompts.put(b"c", states(40))
    assert b"a" in prompts and b"c" in prompts and b"b" not in prompts
    assert prompts.nbytes == 80 * BYTES_PER_TOKEN
    prompts.put(b"d", states(101))  # alone over the bound: not kept, nothing dropped for it
    assert b"d" not in prompts and len(prompts) == 2


def test_kept_prompts_unused_for_their_ttl_are_dropped():
    now = [0.0]
    prompts = shared(ttl=30, clock=lambda: now[0])
    prompts.put(b"a", states(10))
    prompts.put(b"b", states(10))
    now[0] = 20.0
    prompts.get(b"b")  # used: its 30 s start again
    now[0] = 31.0
    prompts.expire()
    assert b"a" not in prompts and b"b" in prompts and prompts.nbytes == 10 * BYTES_PER_TOKEN
