"""The request pipeline built from its parts around a fake engine, with no bundle: each stage
runs once per request, in the order the data flows, and the app factory serves what it is given."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from tokenizers import Tokenizer, models, pre_tokenizers

from rewardserve.bundle import InputFormat, SequenceEncoder
from rewardserve.scoring.admit import Admission
from rewardserve.scoring.batcher import MicroBatcher
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.metrics import Metrics
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.pipeline import ScoringPipeline
from rewardserve.scoring.retemplate import Retemplate
from rewardserve.scoring.tokenize import Tokenize
from rewardserve.scoring.validate import Validate
from rewardserve.service import Settings, create_app
from rewardserve.service.endpoints.base import answer
from rewardserve.service.endpoints.compare import Compare, CompareRequest
from rewardserve.service.endpoints.score import Score, ScoreRequest

CHAT_TEMPLATE = "{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
STAGES = ["validate", "admit", "retemplate", "tokenize", "batch", "engine", "respond"]


def word_encoder() -> SequenceEncoder:
    """Whitespace words, each its own id; [CLS] prompt [SEP] response [SEP]."""
    words = ["<user>", "<assistant>", "hello", "hi", "there", "how", "are", "you", "fine", "thanks", "bye"]
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fmt = InputFormat(
        prefix_ids=[2], separator_ids=[3], suffix_ids=[3], pad_id=0, max_length=32, min_prompt_tokens=4,
        token_type_ids=False, chat_template=CHAT_TEMPLATE,
    )  # fmt: skip
    return SequenceEncoder(tokenizer, fmt)


def length_engine(sequences) -> np.ndarray:
    """A sequence's reward is its length in tokens."""
    return np.array([len(s) for s in sequences], dtype=np.float32)


def recorded(log: list[str], name: str, stage):
    def call(*args, **kwargs):
        log.append(name)
        return stage(*args, **kwargs)

    return call


def recorded_async(log: list[str], name: str, stage):
    async def call(*args, **kwargs):
        log.append(name)
        return await stage(*args, **kwargs)

    return call


def fake_pipeline(log: list[str] | None = None) -> ScoringPipeline:
    """Every stage of the server's, around `length_engine`; each stage's calls go to `log`."""
    log = [] if log is None else log
    encoder = word_encoder()
    metrics = Metrics()
    batcher = MicroBatcher(recorded(log, "engine", length_engine), 8, 1024, metrics)
    admission = Admission(64, metrics, lambda: batcher.throughput, lambda: True)
    admission.permit = recorded(log, "admit", admission.permit)
    batcher.score = recorded_async(log, "batch", batcher.score)
    validate = Validate(max_items=16, max_chars=1000)
    validate.complete = recorded(log, "validate", validate.complete)
    return ScoringPipeline(
        validate=validate,
        admission=admission,
        retemplate=recorded(log, "retemplate", Retemplate()),
        tokenize=recorded(log, "tokenize", Tokenize(encoder)),
        batcher=batcher,
        model=ServedModel("fake-model", temperature=1.0),
        metrics=metrics,
    )


def endpoint_of(body, log: list[str] | None = None):
    """The body's endpoint, its answer written into `log`."""
    endpoint = Score() if isinstance(body, ScoreRequest) else Compare()
    endpoint.respond = recorded([] if log is None else log, "respond", endpoint.respond)
    return endpoint


def run(pipeline: ScoringPipeline, body, context: RequestContext | None = None, log: list[str] | None = None):
    """`body` answered through `pipeline` as the server answers it, the warm-up left out of `log`."""

    async def scored():
        await pipeline.start()  # the warm-up goes through the same stages
        if log is not None:
            log.clear()
        try:
            return await answer(
                pipeline, context or RequestContext("test", time.perf_counter()), endpoint_of(body, log), body
            )
        finally:
            await pipeline.stop()

    return asyncio.run(scored())


def test_a_request_passes_every_stage_once_in_the_order_the_data_flows():
    log: list[str] = []
    pipeline = fake_pipeline(log)
    body = ScoreRequest(items=[{"prompt": "hello there", "response": "hi"}, {"prompt": "how", "response": "fine"}])
    answered = run(pipeline, body, log=log)
    assert log == STAGES
    assert answered.rewards == [6.0, 5.0]  # [CLS] hello there [SEP] hi [SEP]; [CLS] how [SEP] fine [SEP]
    assert answered.model == "fake-model"


def test_chat_items_are_rendered_with_the_template_before_tokenizing():
    body = ScoreRequest(
        items=[{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]}]
    )
    # prompt "<user> hello" + generation prompt "", response "<assistant> hi there": 2 + 3 words + 3 specials
    assert run(fake_pipeline(), body).rewards == [8.0]


def test_the_context_records_counts_tokens_and_timings():
    context = RequestContext("test", time.perf_counter())
    body = CompareRequest(items=[{"prompt": "hello", "a": "hi", "b": "bye bye"}])
    answered = run(fake_pipeline(), body, context)
    assert (context.items, context.sequences, context.tokens) == (1, 2, 5 + 6)
    assert context.timings is not None and context.timings.inference > 0
    assert answered.results[0].reward_a == 5.0 and answered.results[0].p_a_better < 0.5


def test_the_app_factory_serves_the_pipeline_it_is_given():
    settings = Settings(bundle=Path("no-bundle-is-read"))
    with TestClient(create_app(settings, fake_pipeline())) as client:
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:  # the warm-up runs once the app starts
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.01)
        answer = client.post("/score", json={"items": [{"prompt": "hello", "response": "hi"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"rewards": [5.0], "model": "fake-model"}
        assert float(answer.headers["X-Inference-Time"]) > 0
        too_long = client.post(
            "/score", json={"items": [{"prompt": "hello " * 40, "response": "hi"}], "truncate": False}
        )
        assert too_long.status_code == 413 and too_long.json()["error"].startswith("items[0]: ")
