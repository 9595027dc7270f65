"""Stage 5, batch: per-sequence entries from concurrent requests, re-batched into engine calls.

Every sequence of every request is a queue entry of its own. Whenever the engine is free, the
worker builds the next batch around the oldest waiting entry (so nothing starves) from the
queued entries nearest to it in length (so padding stays small), up to a count and a budget of
padded tokens (longest x count). It runs the batch on the engine thread and hands each reward
back to its request; a request gets its rewards in its own order whatever batches they ran in.

Entries whose callers have all gone (their futures cancelled, e.g. the client disconnected)
are dropped before they cost compute. With a cache, a sequence scored before is answered at
once, and one identical to a sequence still queued or running joins it instead of running twice.

With a length bucket (LENGTH_BUCKET; bf16 engines), a batch holds sequences of one bucket of
lengths only, and the engine pads them to the bucket's end: each sequence runs at a padded
length of its own, so its reward does not depend on its batch-mates (bf16 kernels round
differently at different padded lengths).

With shared prompts (shared_prompts.py, decoder bundles), a sequence whose prompt is worth
sharing is batched only with sequences of the same prompt, by response length: the engine runs
the prompt once (or takes its keys and values kept from an earlier batch) and the responses
after it. The budget counts what is computed: the prompt's tokens when it must run, and the
responses' padded tokens.

Knows nothing of HTTP; the engine is any callable from sequences to rewards (with shared
prompts, its `responses` scores sequences of one prompt after that prompt's keys and values).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rewardserve.bundle import EncodedSequence
from rewardserve.bundle.outputs import Extra, Scores
from rewardserve.bundle.prefix import PromptStates
from rewardserve.scoring.cache import RewardCache
from rewardserve.scoring.engine import Engine, PrefixEngine
from rewardserve.scoring.errors import ShuttingDownError
from rewardserve.scoring.gathered import Gathered, Scored
from rewardserve.scoring.metrics import Metrics
from rewardserve.scoring.shared_prompts import SharedPrompts


class _Entry:
    """One sequence to run, and every (request, index) waiting for its reward. `prompt`: the
    prompt it shares (its token ids), when it runs after that prompt's keys and values; then
    `length` counts its response only, what the engine computes for it."""

    __slots__ = ("sequence", "length", "key", "prompt", "targets", "enqueued_at")

    def __init__(
        self, sequence: EncodedSequence, key: bytes | None, prompt: bytes | None, request: Gathered, index: int
    ) -> None:
        self.sequence = sequence
        self.prompt = prompt
        self.length = len(sequence) - (sequence.response_start if prompt is not None else 0)
        self.key = key
        self.targets = [(request, index)]
        self.enqueued_at = request.enqueued_at

    def wanted(self) -> bool:
        return any(not request.future.done() for request, _ in self.targets)


def length_window(sorted_lengths: np.ndarray, anchor: int, max_count: int, max_tokens: int) -> tuple[int, int]:
    """The slice [lo, hi) of length-sorted sequences around `anchor` that a batch takes.

    Grows one neighbour at a time, always the one that adds less padding: a shorter neighbour
    pads itself up to the longest; a longer one pads every sequence already taken up to itself.
    Stops at `max_count` sequences or when either neighbour would take the padded size
    (longest x count) over `max_tokens`; the anchor alone is always taken.
    """
    lo, hi = anchor, anchor + 1
    longest = int(sorted_lengths[anchor])
    while hi - lo < max_count:
        count = hi - lo + 1
        left = int(sorted_lengths[lo - 1]) if lo > 0 and longest * count <= max_tokens else None
        right = int(sorted_lengths[hi]) if hi < len(sorted_lengths) else None
        if right is not None and right * count > max_tokens:
            right = None
        if left is None and right is None:
            break
        if right is None or (left is not None and longest - left <= (right - longest) * (hi - lo)):
            lo -= 1
        else:
            hi += 1
            longest = right
    return lo, hi


class MicroBatcher:
    def __init__(
        self,
        engine: Engine,
        max_batch_size: int,
        max_batch_tokens: int,
        metrics: Metrics | None = None,
        cache: RewardCache | None = None,
        thread_initializer: Callable[[], None] | None = None,
        shared_prompts: SharedPrompts | None = None,
        length_bucket: int = 1,
    ) -> None:
        self.engine = engine
        # The same engine, for the calls after a prompt's keys and values (with shared prompts only).
        self._prefix_engine: PrefixEngine | None = None
        if shared_prompts is not None:
            if not isinstance(engine, PrefixEngine):
                raise TypeError("sharing prompts needs an engine that scores after a prompt's keys and values")
            self._prefix_engine = engine
        self._length_bucket = length_bucket
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._metrics = metrics
        self._cache = cache
        self._prompts = shared_prompts
        self._queue: list[_Entry] = []  # arrival order
        self._pending: dict[bytes, _Entry] = {}  # queued or running entries by cache key
        self._batches = 0
        self._throughput: float | None = None
        self._closed = False
        self._wakeup = asyncio.Event()
        # One engine thread: ONNX Runtime already spreads one call over every core it may use.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="engine", initializer=thread_initializer)
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run_forever(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests not yet answered (queued or running) fail with ShuttingDownError."""
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)
        self.close()

    def close(self) -> None:
        """Take no more work: queued and later requests fail with ShuttingDownError; the running
        batch still finishes."""
        self._closed = True
        self._fail(self._queue, ShuttingDownError("the server stopped before scoring this request"))
        self._queue = []
        self._pending.clear()
        self._set_queue_depth()

    @property
    def queued(self) -> int:
        """Sequences waiting for the engine."""
        return len(self._queue)

    @property
    def throughput(self) -> float | None:
        """Sequences per second of engine time, smoothed over recent batches (None before the first)."""
        return self._throughput

    async def score(self, sequences: Sequence[EncodedSequence]) -> Scored:
        """Rewards of `sequences`, in order, once every batch holding one of them has run."""
        if self._closed:
            raise ShuttingDownError("the server is shutting down")
        if not sequences:
            return Scored(Scores(np.empty(0, dtype=np.float32)))
        request = Gathered(len(sequences), asyncio.get_running_loop().create_future())
        request.future.add_done_callback(self._forget_if_gone)
        for index, sequence in enumerate(sequences):
            self._enqueue(request, index, sequence)
        self._set_queue_depth()
        self._wakeup.set()
        return await request.future

    def _enqueue(self, request: Gathered, index: int, sequence: EncodedSequence) -> None:
        key = None
        if self._cache is not None:
            key = self._cache.key(sequence)
            cached = self._cache.get(key)
            joined = self._pending.get(key) if cached is None else None
            self._count_cache(hit=cached is not None or joined is not None)
            if cached is not None:
                request.cached += 1
                request.set(index, *cached)
                return
            if joined is not None:
                request.cached += 1
                joined.targets.append((request, index))
                return
        prompt = self._prompts.key(sequence) if self._prompts is not None else None
        entry = _Entry(sequence, key, prompt, request, index)
        self._queue.append(entry)
        if key is not None:
            self._pending[key] = entry

    def _forget_if_gone(self, future: asyncio.Future) -> None:
        # A request cancelled (its client left, its deadline passed) or failed (an engine error
        # in one of its batches) wants none of its other sequences any more.
        if future.cancelled() or future.exception() is not None:
            self._drop_unwanted()
            self._set_queue_depth()

    def _drop_unwanted(self) -> None:
        """Remove queued entries no live request waits for: their callers have gone."""
        kept: list[_Entry] = []
        dropped: list[_Entry] = []
        for entry in self._queue:
            (kept if entry.wanted() else dropped).append(entry)
        if dropped:
            for entry in dropped:
                if entry.key is not None:
                    self._pending.pop(entry.key, None)
            self._queue = kept
            if self._metrics:
                self._metrics.dropped_sequences.inc(len(dropped))

    def _lone_prompts(self) -> set[bytes]:
        """Prompts that one queued entry has and that are not kept: such an entry runs whole,
        batched with the others that do, and its prompt's keys and values are kept from that
        call in case a sibling follows (one sample a request, as OpenRLHF and verl send)."""
        counts: dict[bytes, int] = {}
        for entry in self._queue:
            if entry.prompt is not None:
                counts[entry.prompt] = counts.get(entry.prompt, 0) + 1
        return {prompt for prompt, count in counts.items() if count == 1 and prompt not in self._prompts}

    def _take_batch(self) -> tuple[bytes | None, list[_Entry]]:
        """The oldest entry and its nearest neighbours in length among the entries that may share
        its engine call (those of its prompt; or those that run whole, lone prompts among them),
        within the count and the token budget; and the prompt the batch runs after (None: whole)."""
        if not self._queue:
            return None, []
        lone = self._lone_prompts() if self._prompts is not None else set()
        prompt = self._queue[0].prompt  # the oldest entry's
        prompt = None if prompt in lone else prompt
        members = np.array(
            [i for i, e in enumerate(self._queue) if e.prompt == prompt or (prompt is None and e.prompt in lone)],
            dtype=np.int64,
        )
        # A lone entry runs whole: its prompt's tokens are computed too.
        length = (lambda e: e.length) if prompt is not None else (lambda e: len(e.sequence))
        lengths = np.fromiter((length(self._queue[i]) for i in members), dtype=np.int64, count=len(members))
        bucket = self._length_bucket if prompt is None else self._prompts.response_bucket
        if bucket > 1:  # only the oldest entry's bucket, each padded to the bucket's end
            buckets = -(-lengths // bucket)
            same = buckets == buckets[0]  # members[0] is the oldest entry
            members, lengths = members[same], buckets[same] * bucket
        by_length = np.argsort(lengths, kind="stable")  # equal lengths stay in arrival order
        anchor = int(np.flatnonzero(by_length == 0)[0])  # the oldest entry
        rows, tokens = self._max_batch_size, self._max_batch_tokens
        if prompt is not None:
            prompt_length = self._queue[0].sequence.response_start
            rows = min(rows, self._prompts.max_rows(prompt_length))
            tokens -= 0 if prompt in self._prompts else prompt_length  # it runs first when not kept
        lo, hi = length_window(lengths[by_length], anchor, rows, tokens)
        chosen = set(members[by_length[lo:hi]].tolist())
        batch = [self._queue[i] for i in members[by_length[lo:hi]]]
        if not all(entry.wanted() for entry in batch):
            # A caller left since the last look (its done-callback has not run yet): drop its
            # entries and choose again. Checking only the chosen few keeps a long queue cheap.
            self._drop_unwanted()
            return self._take_batch()
        self._queue = [entry for i, entry in enumerate(self._queue) if i not in chosen]
        self._set_queue_depth()
        return prompt, batch

    async def _run_forever(self) -> None:
        while True:
            # Awake at least every ttl, so that kept prompts expire on an idle server too.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._prompts.ttl_seconds if self._prompts else None)
            self._wakeup.clear()
            if self._prompts is not None:
                self._prompts.expire()
            while (taken := self._take_batch())[1]:
                prompt, batch = taken
                self._batches += 1
                started = time.perf_counter()
                try:
                    scores = await self._run(prompt, batch)
                    if not isinstance(scores, Scores):
                        scores = Scores(np.asarray(scores, dtype=np.float32))
                    if len(scores) != len(batch):
                        raise RuntimeError(f"engine returned {len(scores)} rewards for {len(batch)} sequences")
                except asyncio.CancelledError:  # stopped mid-batch: its requests must not wait forever
                    self._fail(batch, ShuttingDownError("the server stopped before scoring this request"))
                    raise
                except Exception as error:  # only this batch's requests fail; the worker lives on
                    self._fail(batch, error)
                    continue
                seconds = time.perf_counter() - started
                rate = len(batch) / max(seconds, 1e-6)
                self._throughput = rate if self._throughput is None else 0.8 * self._throughput + 0.2 * rate
                for row, (entry, reward) in enumerate(zip(batch, scores.rewards.tolist(), strict=True)):
                    extra = scores.extra(row)
                    self._finish(entry, reward, extra)
                    for request, index in entry.targets:
                        request.ran_in(self._batches, seconds)
                        request.set(index, reward, extra)
                self._observe(batch, started, seconds)

    async def _run(self, prompt: bytes | None, batch: list[_Entry]) -> Scores | np.ndarray:
        """The engine's answer for a batch: whole sequences (keeping lone prompts' keys and
        values), or responses after their shared prompt."""
        loop = asyncio.get_running_loop()
        sequences = [e.sequence for e in batch]
        if prompt is None:
            keep = [e.prompt is not None for e in batch]
            if not any(keep):
                return await loop.run_in_executor(self._executor, self.engine, sequences)
            scores, kept = await loop.run_in_executor(self._executor, self._prefix_engine.whole, sequences, keep)
            for entry, states in zip(batch, kept, strict=True):
                if states is not None:
                    self._prompts.put(entry.prompt, states)
                    self._count_prompt(states)
            return scores
        kept = self._prompts.get(prompt)
        scores, states = await loop.run_in_executor(self._executor, self._prefix_engine.responses, kept, sequences)
        self._prompts.put(prompt, states)
        if self._metrics:
            hits = len(batch) - (kept is None)  # the first response of a prompt run here is no hit
            self._metrics.prefix_hits.inc(hits)
            self._metrics.prefix_tokens_saved.inc(hits * states.length)
        if kept is None:
            self._count_prompt(states)
        return scores

    def _count_prompt(self, states: PromptStates) -> None:
        """A prompt whose keys and values were computed (and kept)."""
        if self._metrics:
            self._metrics.prefix_prompts.inc()
            self._metrics.prefix_prompt_tokens.inc(states.length)

    def _fail(self, entries: list[_Entry], error: BaseException) -> None:
        for entry in entries:
            self._finish(entry)
            for request, _ in entry.targets:
                request.fail(error)

    def _finish(self, entry: _Entry, reward: float | None = None, extra: Extra | None = None) -> None:
        if entry.key is not None:
            self._pending.pop(entry.key, None)
            if reward is not None:
                self._cache.put(entry.key, reward, extra)

    def _observe(self, batch: list[_Entry], started: float, seconds: float) -> None:
        if not self._metrics:
            return
        real = sum(e.length for e in batch)
        padded = max(e.length for e in batch) * len(batch)
        m = self._metrics
        m.batch_size.observe(len(batch))
        m.batch_tokens.observe(padded)
        m.padding_tokens.inc(padded - real)
        m.batch_padding_ratio.observe(1 - real / padded)
        m.inference_seconds.observe(seconds)
        for entry in batch:
            m.queue_seconds.observe(started - entry.enqueued_at)

    def _count_cache(self, hit: bool) -> None:
        if self._metrics:
            (self._metrics.cache_hits if hit else self._metrics.cache_misses).inc()

    def _set_queue_depth(self) -> None:
        if self._metrics:
            self._metrics.queue_depth.set(len(self._queue))
