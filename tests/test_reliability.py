"""Overload, deadlines, engine faults, draining and access logs, on the tiny bundle's real ONNX
Runtime session (uvicorn on loopback in a thread; the engine held by a gate where timing matters)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from live import Gate, Server, free_port, hold_engine, post_in_background, serve, wait_for

from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import ShuttingDownError
from rewardserve.scoring.validate import Inputs
from rewardserve.service import Settings, bundle_pipeline
from rewardserve.service.logs import JsonFormatter

ITEM = {"prompt": "\n\nHuman: What is the capital of France?", "response": "Paris."}


def items(n: int, tag: str = "") -> list[dict]:
    return [{"prompt": f"\n\nHuman: question {tag}{i}?", "response": "answer " * (i + 1)} for i in range(n)]


@pytest.fixture
def server(tiny_bundle) -> Iterator[Server]:
    settings = Settings(
        bundle=tiny_bundle, port=free_port(), cache_size=0, max_queued_sequences=8, max_items_per_request=4
    )
    yield from serve(settings)


def hold_one(server: Server) -> tuple[Gate, threading.Thread, dict]:
    """A 1-item request on the engine, held there until the gate opens."""
    return hold_engine(server, {"items": items(1, "held")})


def test_a_full_queue_answers_429_at_once_with_retry_after_and_accepted_requests_complete(server):
    gate, first, first_answer = hold_one(server)  # 1 of 8 sequences in flight
    queued, queued_answer = post_in_background(server.url, {"items": items(4, "q")})
    wait_for(lambda: server.pipeline.admission.in_flight_sequences == 5, "5 sequences in flight")

    refused = httpx.post(f"{server.url}/score", json={"items": items(4, "r")}, timeout=5)  # 5 + 4 > 8
    assert refused.status_code == 429  # answered while the engine is still held: nothing waited
    assert refused.json()["error_type"] == "overloaded"
    assert "5 sequences in flight, 4 more would pass the limit of 8" in refused.json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1

    fits, fits_answer = post_in_background(server.url, {"items": items(3, "f")})  # 5 + 3 = 8: accepted
    wait_for(lambda: server.pipeline.admission.in_flight_sequences == 8, "8 sequences in flight")
    gate.opened.set()
    for thread in (first, queued, fits):
        thread.join(timeout=30)
    assert [first_answer["status"], queued_answer["status"], fits_answer["status"]] == [200, 200, 200]
    assert len(fits_answer["body"]["rewards"]) == 3
    assert server.metric("rewardserve_requests_total", endpoint="/score", status="429") == 1
    assert server.metric("rewardserve_in_flight_sequences") == 0


def test_a_request_past_its_deadline_gets_504_and_its_queued_sequences_are_dropped(server):
    gate, first, _ = hold_one(server)
    late = httpx.post(
        f"{server.url}/score", json={"items": items(3, "late")}, headers={"X-Request-Timeout": "0.3"}, timeout=10
    )
    assert late.status_code == 504
    assert late.json()["error_type"] == "deadline_exceeded"
    assert server.metric("rewardserve_dropped_sequences_total") == 3
    assert server.metric("rewardserve_queue_depth") == 0
    gate.opened.set()
    first.join(timeout=30)
    assert gate.batches == [1]  # the late request's sequences never ran
    assert httpx.post(f"{server.url}/score", json={"items": [ITEM]}).status_code == 200


def test_an_engine_error_fails_only_its_batch_with_500_and_an_error_id_logged_with_the_traceback(server, caplog):
    runtime = server.runtime
    real_run, calls = runtime.score, []

    def fails_first_call(batch):
        calls.append(len(batch.arrays["input_ids"]))
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real_run(batch)

    gate = Gate()
    runtime.score = gate.wrap(fails_first_call)
    failing, failing_answer = post_in_background(server.url, {"items": items(1, "bad")})
    assert gate.entered.wait(timeout=10)
    other, other_answer = post_in_background(server.url, {"items": items(2, "ok")})
    wait_for(lambda: server.pipeline.batcher.queued == 2, "the other request queued")
    with caplog.at_level(logging.ERROR, logger="rewardserve"):
        gate.opened.set()
        failing.join(timeout=30)
        other.join(timeout=30)

    assert failing_answer["status"] == 500
    body = failing_answer["body"]
    assert body["error_type"] == "engine_error" and body["error_id"] in body["error"]
    (logged,) = [r for r in caplog.records if getattr(r, "fields", {}).get("error_id") == body["error_id"]]
    assert logged.exc_info is not None and "injected fault" in str(logged.exc_info[1])
    assert other_answer["status"] == 200 and len(other_answer["body"]["rewards"]) == 2
    assert calls == [1, 2, 2]  # the failed batch, the probe that found the session fine, the next batch
    assert server.metric("rewardserve_engine_failures_total") == 1
    assert server.metric("rewardserve_engine_restarts_total") == 0
    assert httpx.get(f"{server.url}/health").status_code == 200


class BrokenSession:
    """Stands in for an ONNX Runtime session left unusable (e.g. by a device fault)."""

    def run(self, *args, **kwargs):
        raise RuntimeError("session is broken")

    run_with_iobinding = run


def test_a_broken_session_is_reopened_and_serving_resumes(server):
    before = httpx.post(f"{server.url}/score", json={"items": [ITEM]}).json()["rewards"]
    server.runtime.session = BrokenSession()
    failed = httpx.post(f"{server.url}/score", json={"items": items(1, "x")})
    assert failed.status_code == 500 and failed.json()["error_type"] == "engine_error"
    assert server.metric("rewardserve_engine_restarts_total") == 1
    assert not isinstance(server.runtime.session, BrokenSession)
    after = httpx.post(f"{server.url}/score", json={"items": [ITEM]})
    assert after.status_code == 200 and after.json()["rewards"] == pytest.approx(before, abs=1e-6)
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_an_engine_that_cannot_be_reopened_fails_health_so_the_orchestrator_restarts_it(server, monkeypatch):
    runtime = server.runtime
    runtime.session = BrokenSession()
    monkeypatch.setattr(runtime, "_open", BrokenSession)
    assert httpx.post(f"{server.url}/score", json={"items": [ITEM]}).status_code == 500
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 503 and health.json()["error_type"] == "unhealthy"
    assert httpx.get(f"{server.url}/ready").status_code == 503
    refused = httpx.post(f"{server.url}/score", json={"items": [ITEM]})
    assert refused.status_code == 503 and refused.json()["error_type"] == "not_ready"


def test_request_ids_are_echoed_or_made_and_each_request_is_one_json_access_line_without_its_texts(server, caplog):
    with caplog.at_level(logging.INFO, logger="rewardserve.access"):
        echoed = httpx.post(f"{server.url}/score", json={"items": [ITEM]}, headers={"X-Request-ID": "trace-42"})
        made = httpx.post(f"{server.url}/score", json={"items": [ITEM, ITEM]})
        replaced = httpx.post(f"{server.url}/score", json={"items": [ITEM]}, headers={"X-Request-ID": "a b"})
        refused = httpx.post(f"{server.url}/score", json={"items": items(5)})
    assert echoed.headers["X-Request-ID"] == "trace-42"
    assert len(made.headers["X-Request-ID"]) == 32 and made.headers["X-Request-ID"] != "trace-42"
    assert replaced.headers["X-Request-ID"] != "a b"

    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "rewardserve.access"]
    by_id = {line["request_id"]: line for line in lines}
    first = by_id["trace-42"]
    assert first["status"] == 200 and first["path"] == "/score" and first["method"] == "POST"
    assert first["items"] == 1 and first["sequences"] == 1 and first["tokens"] > 5 and first["latency_ms"] > 0
    assert by_id[made.headers["X-Request-ID"]]["items"] == 2
    assert by_id[refused.headers["X-Request-ID"]]["status"] == 413
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "capital of France" not in logged and "Paris" not in logged


def test_json_log_lines_carry_fields_and_the_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info(), extra={"fields": {"error_id": "e1"}}
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed x" and line["level"] == "error" and line["error_id"] == "e1"
    assert "ValueError: boom" in line["traceback"]


def drain_scenario(tiny_bundle, drain_timeout: float) -> dict:
    """Two requests (one on the held engine, one queued), then a drain; what each side saw."""

    async def run() -> dict:
        pipeline = bundle_pipeline(Settings(bundle=tiny_bundle, cache_size=0))
        await pipeline.start()
        gate = Gate()
        runtime = pipeline.batcher.engine.runtime
        runtime.score = gate.wrap(runtime.score)

        def score(prompts: list[str], responses: list[str]):
            return pipeline.scores(RequestContext("test", time.perf_counter()), Inputs.of_texts(prompts, responses))

        running = asyncio.ensure_future(score(["p"], ["running"]))
        await asyncio.to_thread(gate.entered.wait, 10)
        queued = asyncio.ensure_future(score(["p", "p"], ["queued", "queued too"]))
        await asyncio.sleep(0.05)
        drain = asyncio.ensure_future(pipeline.drain(drain_timeout))
        await asyncio.sleep(0.05)
        seen = {"ready_while_draining": pipeline.admission.ready}
        try:
            await score(["p"], ["new"])
        except ShuttingDownError:
            seen["new_request"] = "refused"
        threading.Timer(0.5, gate.opened.set).start()  # the engine comes back after 0.5 s
        await drain
        for name, task in (("running", running), ("queued", queued)):
            seen[name] = "refused" if isinstance(task.exception(), ShuttingDownError) else len(task.result())
        await pipeline.stop()
        return seen

    return asyncio.run(run())


def test_draining_refuses_new_work_and_answers_every_accepted_request(tiny_bundle):
    seen = drain_scenario(tiny_bundle, drain_timeout=30)
    assert seen == {"ready_while_draining": False, "new_request": "refused", "running": 1, "queued": 2}


def test_past_the_drain_timeout_queued_requests_are_answered_503_and_the_running_batch_finishes(tiny_bundle):
    seen = drain_scenario(tiny_bundle, drain_timeout=0.2)
    assert seen == {"ready_while_draining": False, "new_request": "refused", "running": 1, "queued": "refused"}
