"""Several models in one server (`--bundle NAME=PATH ...`): each with its own engine, batcher and
queue, listed by /v1/models, picked by the request's `model` as vLLM and the SGLang gateway
route, and each answering exactly what its own single-model server answers."""

from __future__ import annotations

import httpx
import pytest
from live import free_port, running

from rewardserve.data.hh import prompt_turns
from rewardserve.service import Settings
from rewardserve.service.main import bundle_settings

ITEMS = [
    {"prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "response": f" answer{' very' * i} {i}"} for i in range(6)
]


@pytest.fixture(scope="module")
def bundles(tiny_bundle, objective_rm):
    """{name: bundle}: the encoder RM (the default) and a multi-objective chat RM."""
    return {"helpful": tiny_bundle, "objectives": objective_rm[1]}


@pytest.fixture(scope="module")
def messages(heldout_pairs) -> list[dict]:
    examples = [e for e in heldout_pairs if len(e.prompt) + len(e.responses[0]) < 1000][:5]
    return [{"messages": [*prompt_turns(e.prompt), {"role": "assistant", "content": e.responses[0]}]} for e in examples]


@pytest.fixture(scope="module")
def alone(bundles, messages) -> dict[str, dict]:
    """What each model's own single-model server answers: /score of ITEMS and of `messages`."""
    answers = {}
    for name, bundle in bundles.items():
        with running(Settings(bundle=bundle, port=free_port(), cache_size=0)) as server:
            answers[name] = {
                "text": httpx.post(f"{server.url}/score", json={"items": ITEMS}).json(),
                "chat": httpx.post(f"{server.url}/score", json={"items": messages}).json(),
            }
    return answers


@pytest.fixture(scope="module")
def server(bundles):
    settings = Settings(
        bundle=bundles["helpful"], served_model_name="helpful", models={"objectives": bundles["objectives"]},
        port=free_port(), cache_size=0,
    )  # fmt: skip
    with running(settings) as server:
        yield server


def test_every_model_is_listed_the_default_first(server):
    listed = httpx.get(f"{server.url}/v1/models").json()["data"]
    assert [model["id"] for model in listed] == ["helpful", "objectives"]
    info = httpx.get(f"{server.url}/server_info").json()
    assert info["ready"] and set(info["models"]) == {"helpful", "objectives"}
    assert info["max_queued_sequences"] == sum(m["max_queued_sequences"] for m in info["models"].values())
    # memory: what loading each model added (the tiny models here: a few MiB at most), and the process in all
    added = [m["resident_mib"] for m in info["models"].values()]
    assert all(isinstance(mib, int) and mib >= 0 for mib in added) and info["resident_mib"] > sum(added)
    assert httpx.get(f"{server.url}/model_info", params={"model": "objectives"}).json()["num_labels"] == 3


def test_each_model_answers_as_its_own_server_selected_by_model(server, alone, messages):
    for name in ("helpful", "objectives"):
        for kind, items in (("text", ITEMS), ("chat", messages)):
            answer = httpx.post(f"{server.url}/score", json={"items": items, "model": name}).json()
            assert answer["model"] == name
            assert answer["rewards"] == pytest.approx(alone[name][kind]["rewards"], abs=1e-6)
            assert answer.get("objectives") == alone[name][kind].get("objectives")


def test_a_request_without_model_gets_the_default(server, alone):
    answer = httpx.post(f"{server.url}/score", json={"items": ITEMS}).json()
    assert answer["model"] == "helpful"
    assert answer["rewards"] == pytest.approx(alone["helpful"]["text"]["rewards"], abs=1e-6)


def test_every_protocol_routes_by_model(server, alone, messages):
    queries = [item["prompt"] + item["response"] for item in ITEMS]
    prompts = [item["prompt"] for item in ITEMS]
    body = {"query": queries, "prompts": prompts, "policy_format": "raw", "model": "objectives"}
    got = httpx.post(f"{server.url}/get_reward", json=body).json()
    assert got["rewards"] == pytest.approx(alone["objectives"]["text"]["rewards"], abs=1e-6)
    classify = httpx.post(f"{server.url}/classify", json={"model": "objectives", "messages": messages[0]["messages"]})
    assert classify.json()["model"] == "objectives"


def test_an_unknown_model_is_404_listing_the_served(server):
    answer = httpx.post(f"{server.url}/score", json={"items": ITEMS, "model": "gpt-4"})
    assert answer.status_code == 404
    assert answer.json()["error_type"] == "model_not_found"
    assert "'gpt-4'" in answer.json()["error"] and "helpful, objectives" in answer.json()["error"]


def test_metrics_are_per_model(server):
    httpx.post(f"{server.url}/score", json={"items": ITEMS[:2], "model": "objectives"}).raise_for_status()
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'rewardserve_requests_total{endpoint="/score",model_name="objectives",status="200"}' in metrics
    assert 'rewardserve_queue_limit_sequences{model_name="helpful"}' in metrics
    assert metrics.count("# HELP rewardserve_requests_total ") == 1  # one family, a label per model


def test_one_model_served_accepts_any_name(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port())) as server:
        answer = httpx.post(f"{server.url}/score", json={"items": ITEMS[:1], "model": "/ckpt/rm-step-100"})
    assert answer.status_code == 200


def test_the_command_line_names_each_bundle():
    assert bundle_settings(["a=/b/1", "b=/b/2"]) == {
        "bundle": "/b/1",
        "served_model_name": "a",
        "models": {"b": "/b/2"},
    }
    assert bundle_settings(["/b/1"]) == {"bundle": "/b/1", "served_model_name": None, "models": None}
    with pytest.raises(SystemExit, match="name each"):
        bundle_settings(["/b/1", "b=/b/2"])
