"""Prompt sharing for the batcher: which sequences are scored after their prompt's keys and
values (bundle/prefix.py), and those keys and values kept a short while.

GRPO scores G responses to every prompt, sent in one request (a /compare of K responses, a
/score of repeated prompts) or one sample a request (OpenRLHF, verl). A decoder's keys and values
at the prompt's tokens do not depend on the response, so the prompt need only run once: the
batcher groups queued sequences by their prompt's token ids, and keeps each prompt's keys and
values here for the group's later arrivals.

A sequence is keyed by its prompt's token ids exactly as the whole sequence was tokenized and
truncated: sequences share keys and values only where those ids are equal, so a response is
never read after a prompt it did not have. It runs whole instead, and is counted, for the
reasons of `bundle.prefix.runs_whole` (a short prompt, a token merged across the join, nothing
to split).

Memory: one prompt token's keys and values are `bytes_per_token` (a 0.6B Qwen3 in fp32: 224 KiB,
so 1,000 prompt tokens hold 224 MiB; at bf16 under OpenVINO half that). Prompts are kept up to
`max_bytes`, least recently used first out, and dropped after `ttl_seconds` unused. Unless the
operator sets it, `max_bytes` is sized from the model and the machine (`kept_prompts_budget`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from rewardserve.bundle import EncodedSequence
from rewardserve.bundle.prefix import PromptStates, prompt_ids, runs_whole
from rewardserve.scoring.metrics import Metrics

# The kept prompts' default budget: room for this many whole sequences of the bundle's longest.
# A group's prompt need only stay until its later samples arrive; the batcher already runs the
# siblings queued together after one prompt call. 4 on the 0.6B shape (bf16 keys and values,
# 1,024 tokens) is 448 MiB: the server held 1.25x its fp32 weights after 128 distinct pairs with
# 256 MiB, and 1.63x with 1 GiB (the fixed default before), which kept 9 such prompts.
KEPT_SEQUENCES = 4
# ...and at most this share of the memory the process may use (a container's limit).
KEPT_SHARE_OF_MEMORY = 1 / 8


def kept_prompts_budget(bytes_per_token: int, max_length: int, memory: int | None) -> int:
    """Bytes of prompts' keys and values to keep: KEPT_SEQUENCES sequences of `max_length` tokens,
    at most KEPT_SHARE_OF_MEMORY of `memory` (None: unknown, no cap)."""
    budget = KEPT_SEQUENCES * max_length * bytes_per_token
    return budget if memory is None else min(budget, int(memory * KEPT_SHARE_OF_MEMORY))


class SharedPrompts:
    def __init__(
        self,
        min_prompt_tokens: int,
        max_bytes: int,
        ttl_seconds: float,
        row_bytes_per_token: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        response_bucket: int = 1,
    ) -> None:
        self.min_prompt_tokens = min_prompt_tokens
        # Responses after a prompt are padded to a multiple of this (PrefixRunner), and batched
        # only with responses of the same multiple.
        self.response_bucket = response_bucket
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.row_bytes_per_token = row_bytes_per_token
        self._metrics = metrics
        self._clock = clock
        self._states: OrderedDict[bytes, tuple[PromptStates, float]] = OrderedDict()  # least recently used first
        self.nbytes = 0

    def key(self, sequence: EncodedSequence) -> bytes | None:
        """The prompt `sequence` shares (its token ids), or None when it runs whole (counted)."""
        reason = runs_whole(sequence, self.min_prompt_tokens)
        if reason is None:
            return prompt_ids(sequence).tobytes()
        if self._metrics:
            self._metrics.prefix_whole.labels(reason).inc()
        return None

    def max_rows(self, prompt_length: int) -> int:
        """Most responses one engine call takes after a prompt: each row holds a copy of its keys
        and values while it runs (`row_bytes_per_token`: PrefixRunner's), bounded by the same
        memory as the kept prompts."""
        return max(1, self.max_bytes // max(1, prompt_length * self.row_bytes_per_token))

    def get(self, key: bytes) -> PromptStates | None:
        kept = self._states.get(key)
        if kept is None:
            return None
        self._states[key] = (kept[0], self._clock())
        self._states.move_to_end(key)
        return kept[0]

    def __contains__(self, key: bytes) -> bool:
        return key in self._states

    def put(self, key: bytes, states: PromptStates) -> None:
        """Keep `states` (unless alone they exceed the bound), dropping the least recently used."""
        self._discard(key)
        if states.nbytes > self.max_bytes:
            return
        self._states[key] = (states, self._clock())
        self.nbytes += states.nbytes
        while self.nbytes > self.max_bytes:
            self._discard(next(iter(self._states)))
        self._observe()

    def expire(self) -> None:
        """Drop prompts unused for ttl_seconds."""
        oldest_kept = self._clock() - self.ttl_seconds
        while self._states and next(iter(self._states.values()))[1] < oldest_kept:
            self._discard(next(iter(self._states)))
        self._observe()

    def __len__(self) -> int:
        return len(self._states)

    def _discard(self, key: bytes) -> None:
        kept = self._states.pop(key, None)
        if kept is not None:
            self.nbytes -= kept[0].nbytes

    def _observe(self) -> None:
        if self._metrics:
            self._metrics.prefix_cache_bytes.set(self.nbytes)
            self._metrics.prefix_cache_prompts.set(len(self._states))
