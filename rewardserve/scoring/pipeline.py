"""The scoring pipeline: the sequences of one request through every stage, each in its own file,
in the order the data flows. A transport reads its request into Inputs (the HTTP server: each
endpoint's `inputs`, `service/endpoints/`), has them scored here, and writes its answer from the
scores and the served model (`model.py`).

    validate.py   body -> Inputs, read by its endpoint (`endpoints/`; field paths; item and text
                  limits: 413)
    admit.py      a permit for its sequences (503 and 429 are decided there; limits.RefuseEarly
                  asks the same Admission before the body is read)
    retemplate.py policy-formatted text -> the conversation it spells      } on the tokenizer
    tokenize.py   texts and conversations -> token ids, rendered with the  } thread
                  bundle's template and truncated by its policy
    batcher.py    sequences from every request, re-batched by length (and cached)
    engine.py     a padded batch through ONNX Runtime

The stages are built elsewhere and passed in (`app.py` builds them from a bundle; a test builds
them around a fake engine), as text-embeddings-inference's `Infer::new` takes its parts.
The pipeline also owns the life cycle around them: warm-up, drain, stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from rewardserve.bundle import EncodedSequence
from rewardserve.bundle.outputs import ModelOutputs, Scores
from rewardserve.scoring.admit import Admission
from rewardserve.scoring.batcher import MicroBatcher
from rewardserve.scoring.context import RequestContext, Timings
from rewardserve.scoring.engine import PROBE_PROMPTS, PROBE_RESPONSES, probe_responses
from rewardserve.scoring.errors import ClientDisconnectedError, DeadlineExceededError, EngineError
from rewardserve.scoring.gathered import Scored
from rewardserve.scoring.metrics import Metrics
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.monitoring import RewardMonitor
from rewardserve.scoring.retemplate import Retemplate
from rewardserve.scoring.tokenize import Tokenize
from rewardserve.scoring.validate import Input, Inputs, Validate

T = TypeVar("T")


def warm_up_inputs(outputs: ModelOutputs | None = None) -> Inputs:
    """What warms the server up: the engine's probe texts, twice, as the model reads them (each
    response one step for a process reward model, two responses a text for a pairwise judge)."""
    outputs = outputs or ModelOutputs()
    if outputs.pairwise:
        pairs = enumerate(zip(PROBE_PROMPTS * 2, probe_responses(outputs) * 2, strict=True))
        return Inputs([Input(p, r, f"[{i}]") for i, (p, r) in pairs], items=2 * len(PROBE_PROMPTS))
    return Inputs.of_texts(PROBE_PROMPTS * 2, PROBE_RESPONSES * 2, outputs.steps and outputs.steps.separator)


class ScoringPipeline:
    def __init__(
        self,
        *,
        validate: Validate,
        admission: Admission,
        retemplate: Retemplate,
        tokenize: Tokenize,
        batcher: MicroBatcher,
        model: ServedModel,
        metrics: Metrics,
        monitor: RewardMonitor | None = None,
        thread_initializer: Callable[[], None] | None = None,
        warm_up: Inputs | None = None,
    ) -> None:
        self.validate = validate
        self.warm_up = warm_up or warm_up_inputs()
        self.admission = admission
        self.retemplate = retemplate
        self.tokenize = tokenize
        self.batcher = batcher
        self.model = model  # what every answer may say of the model
        self.metrics = metrics
        self.monitor = monitor
        # One tokenizer thread: tokenizers already spreads a batch call over the cores, and more
        # threads would only contend for them and for the GIL.
        self._tokenizer = ThreadPoolExecutor(1, thread_name_prefix="tokenizer", initializer=thread_initializer)

    @property
    def max_length(self) -> int:
        """The most tokens the model reads in one sequence."""
        return self.tokenize.encoder.format.max_length

    async def scores(self, context: RequestContext, inputs: Inputs) -> Scores:
        """Rewards (and the model's other outputs) of `inputs` (read with `self.validate`'s checks,
        completed by its `complete`) in their order, within the context's deadline and while its
        client waits; a ServiceError says why there are none."""
        context.items, context.sequences = inputs.items, len(inputs)
        if not inputs.sequences:  # OpenRLHF sends empty shards to some of its reward URLs
            return Scores(np.empty(0, dtype=np.float32))
        with self.admission.permit(len(inputs)):
            return await watched(context, self._scored(context, inputs))

    async def _scored(self, context: RequestContext, inputs: Inputs) -> Scores:
        # Retemplate and tokenize in one hop to the tokenizer thread, before queueing: the engine
        # keeps running meanwhile, and a bad input fails its own request only.
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        sequences = await loop.run_in_executor(self._tokenizer, self._encode, inputs)
        tokenized = time.perf_counter() - started
        self.metrics.tokenization_seconds.observe(tokenized)
        context.tokens = sum(len(s) for s in sequences)
        try:
            scored: Scored = await self.batcher.score(sequences)
        except EngineError as error:
            context.error_id = error.error_id  # for the access log line
            raise
        context.timings = Timings(tokenized, scored.queue_seconds, scored.inference_seconds, scored.cached)
        if self.monitor is not None and context.monitored:
            self.monitor.observe(scored.scores, self.tokenize.response_tokens(sequences))
        return scored.scores

    def _encode(self, inputs: Inputs) -> list[EncodedSequence]:
        return self.tokenize(self.retemplate(inputs), inputs)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Start batching and warm up; the server turns ready when the first batches have run."""
        self.batcher.start()
        await self.scores(RequestContext("warm-up", time.perf_counter(), monitored=False), self.warm_up)
        self.admission.warmed_up = True

    async def drain(self, timeout: float) -> None:
        """Refuse new work and answer every admitted request: with rewards if they are ready
        within `timeout` seconds, else with ShuttingDownError (503) for what is still queued."""
        await self.admission.drain(timeout, on_timeout=self.batcher.close)

    async def stop(self) -> None:
        self.admission.draining = True
        await self.batcher.stop()
        self._tokenizer.shutdown(wait=False, cancel_futures=True)


async def watched(context: RequestContext, work: Awaitable[T]) -> T:
    """`work`'s result; or ClientDisconnectedError as soon as the client goes away, or
    DeadlineExceededError at the context's deadline. Either way the work is cancelled, and so
    is its batcher request, whose queued sequences are then dropped unscored."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(context.disconnected()) if context.disconnected else None
    waiting = (task,) if watcher is None else (task, watcher)
    wait = None if context.deadline is None else max(context.deadline - time.perf_counter(), 0.0)
    try:
        done, _ = await asyncio.wait(waiting, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if watcher is not None:
            watcher.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    if watcher is not None and watcher in done:
        raise ClientDisconnectedError("the client disconnected before its rewards were ready")
    waited = time.perf_counter() - context.arrived
    raise DeadlineExceededError(f"deadline: no rewards after {waited:.3f} s; the request's queued work was dropped")
