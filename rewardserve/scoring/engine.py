"""Stage 6, engine: what the batcher calls from its one thread. A batch of sequences is padded
into the graph's inputs (the bundle encoder's `pad`, which knows the graph's input names and
padding side) and run through the bundle's session (ONNX Runtime, or OpenVINO for bf16); then
what happens when that fails.

A failed batch is logged once, with its traceback, under a fresh error id; its requests get
EngineError carrying that id. Then a probe batch tells a bad batch from a broken session: if
the probe fails too, the session is reopened from the graph file, and if the new session fails
the probe as well the engine is marked broken, so /health fails and the orchestrator restarts
the process. Knows nothing of asyncio or HTTP.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from rewardserve.bundle import EncodedSequence, GraphRunner
from rewardserve.bundle.judge import ResponsePair
from rewardserve.bundle.judge.template import Response
from rewardserve.bundle.outputs import ModelOutputs, Scores, join_steps
from rewardserve.bundle.prefix import PrefixRunner, PromptStates, prompt_ids
from rewardserve.scoring.errors import EngineError
from rewardserve.scoring.metrics import Metrics

logger = logging.getLogger("rewardserve.engine")

# Two lengths, so a probe exercises padding as real batches do.
PROBE_PROMPTS = ["warm-up", "warm-up"]
PROBE_RESPONSES = ["a short response", "a somewhat longer response " * 8]


def probe_responses(outputs: ModelOutputs) -> list[Response]:
    """The probe's responses as the model reads them: each ending its step for a process reward
    model; each beside the other for a pairwise judge."""
    if outputs.steps is not None:
        return [join_steps([r], outputs.steps.separator) for r in PROBE_RESPONSES]
    if outputs.pairwise:
        return [ResponsePair(a, b) for a, b in zip(PROBE_RESPONSES, PROBE_RESPONSES[::-1], strict=True)]
    return list(PROBE_RESPONSES)


class Engine(Protocol):
    """What the batcher runs on its engine thread: sequences -> their Scores (a bare array of
    rewards is taken as their Scores). BundleEngine is the server's; tests pass simpler ones."""

    def __call__(self, sequences: Sequence[EncodedSequence]) -> Scores | np.ndarray: ...


@runtime_checkable
class PrefixEngine(Engine, Protocol):
    """An engine that also scores after a prompt's kept keys and values (shared_prompts.py)."""

    def whole(
        self, sequences: Sequence[EncodedSequence], keep: Sequence[bool]
    ) -> tuple[Scores, list[PromptStates | None]]: ...

    def responses(
        self, states: PromptStates | None, sequences: Sequence[EncodedSequence]
    ) -> tuple[Scores, PromptStates]: ...


class BundleEngine:
    """A bundle's graph runner as the batcher's engine (a PrefixEngine where the runner has a
    prefix graph). `length_bucket`: each batch is padded to a multiple of it (the batcher batches sequences of
    the same multiple only), so that a sequence's padded length, and with it its reward, does not
    depend on its batch-mates."""

    def __init__(self, runtime: GraphRunner, metrics: Metrics | None = None, length_bucket: int = 1) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.length_bucket = length_bucket
        self.broken = False

    def probe(self) -> None:
        """Score one known batch; raises when the session cannot."""
        sequences = self.runtime.encoder.encode(PROBE_PROMPTS, probe_responses(self.runtime.outputs))
        _check(self.runtime.score(self.runtime.encoder.pad(sequences)), expected=len(PROBE_PROMPTS))

    def __call__(self, sequences: Sequence[EncodedSequence]) -> Scores:
        """Finite rewards (and the model's other outputs) of `sequences`, or EngineError."""
        pad = self.runtime.encoder.pad
        return self._guarded(len(sequences), lambda: self.runtime.score(pad(sequences, self.length_bucket)))

    def whole(
        self, sequences: Sequence[EncodedSequence], keep: Sequence[bool]
    ) -> tuple[Scores, list[PromptStates | None]]:
        """`__call__`'s answer, and the prompt's keys and values of each sequence whose `keep` is
        set, read off the same call. Needs a runtime with a prefix graph."""
        prefix = self._prefix()
        kept: list[PromptStates | None] = []

        def run() -> Scores:
            scores, states = prefix.score_whole(sequences, keep, self.length_bucket)
            kept.extend(states)
            return scores

        return self._guarded(len(sequences), run), kept

    def _prefix(self) -> PrefixRunner:
        if self.runtime.prefix is None:
            raise RuntimeError("the engine has no prefix graph")
        return self.runtime.prefix

    def responses(
        self, states: PromptStates | None, sequences: Sequence[EncodedSequence]
    ) -> tuple[Scores, PromptStates]:
        """`__call__`'s answer for sequences that all share one prompt (their ids before
        response_start), scored after its keys and values: `states` when kept from before, else
        run here; and those states, to keep. Needs a runtime with a prefix graph."""
        prefix = self._prefix()

        def run() -> Scores:
            nonlocal states
            states = states or prefix.prompt_states(prompt_ids(sequences[0]))
            return prefix.score_responses(states, [s.ids[states.length :] for s in sequences])

        scores = self._guarded(len(sequences), run)
        return scores, states

    def _guarded(self, rows: int, run: Callable[[], Scores]) -> Scores:
        try:
            return _check(run(), expected=rows)
        except Exception as error:
            error_id = uuid.uuid4().hex[:16]
            logger.exception("engine failed on a batch of %d sequences", rows, extra={"fields": {"error_id": error_id}})
            if self.metrics:
                self.metrics.engine_failures.inc()
            self._recover()
            message = f"the engine failed on a batch holding this request's sequences (error id {error_id})"
            raise EngineError(message, error_id) from error

    def _recover(self) -> None:
        try:
            self.probe()
            self.broken = False
            return  # the session still scores: only that batch failed
        except Exception:
            logger.warning("the probe batch fails too; reopening the ONNX Runtime session")
        try:
            self.runtime.reopen()
            self.probe()
        except Exception:
            self.broken = True
            logger.exception("the reopened session fails the probe too; the engine is broken")
            return
        self.broken = False
        if self.metrics:
            self.metrics.engine_restarts.inc()
        logger.warning("ONNX Runtime session reopened; serving again")


def _check(scores: Scores, expected: int) -> Scores:
    rewards = scores.rewards
    if rewards.shape != (expected,):
        raise RuntimeError(f"engine returned {rewards.shape[0]} rewards for {expected} sequences")
    if not np.isfinite(rewards).all():
        raise FloatingPointError(f"engine returned {int((~np.isfinite(rewards)).sum())} non-finite rewards")
    if scores.objectives is not None and not np.isfinite(scores.objectives).all():
        raise FloatingPointError("engine returned non-finite objectives")
    return scores
