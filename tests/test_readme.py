"""The examples of the README and of the documentation site (docs/) run as written: every code
block marked `<!-- readme-test: NAME -->` runs against a live server on the tiny bundle (its URL,
and a tiny policy for the TRL one, substituted), from a scratch directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from live import free_port, running

from rewardserve.service import Settings

ROOT = Path(__file__).parents[1]
BLOCK = re.compile(r"<!-- readme-test: (?P<name>[\w-]+) -->\n```(?P<language>\w+)\n(?P<code>.*?)\n```", re.DOTALL)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKED = [(m["name"], m["language"], m["code"]) for page in PAGES for m in BLOCK.finditer(page.read_text())]
EXAMPLES = {name: (language, code) for name, language, code in MARKED}


@pytest.fixture(scope="module")
def server(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port())) as server:
        yield server


def run_example(name: str, server, tmp_path: Path, **replacements: str) -> str:
    language, code = EXAMPLES[name]
    replacements = {"http://127.0.0.1:8000": server.url, "localhost:8000": server.url, **replacements}
    for old, new in replacements.items():
        code = code.replace(old, new)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README example {name!r} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def test_example_names_are_unique_across_the_readme_and_the_site():
    assert len(EXAMPLES) == len(MARKED)


def test_every_marked_example_is_run_here():
    tested = {
        "chat",
        "best-of-n",
        "objectives",
        "steps",
        "trl",
        "openrlhf",
        "verl",
        "slime",
        "classify",
        "readme-score",
        "readme-compare",
        "readme-get-reward",
        "readme-classify",
        "readme-slime",
        "score",
        "eval",
        "rewardbench2",
    }
    assert set(EXAMPLES) == tested


def test_chat_scoring(server, tmp_path):
    answer = json.loads(run_example("chat", server, tmp_path))
    assert len(answer["rewards"]) == 1


def test_best_of_n(server, tmp_path):
    answer = json.loads(run_example("best-of-n", server, tmp_path))
    assert sorted(answer["ranking"]) == [0, 1, 2] and len(answer["p_better"]) == 3


def test_objectives(objective_rm, tmp_path):
    with running(Settings(bundle=objective_rm[1], port=free_port())) as server:
        answer = json.loads(run_example("objectives", server, tmp_path))
    assert list(answer["objectives"]) == ["helpfulness", "verbosity"] and len(answer["rewards"]) == 1


def test_steps(prm, tmp_path):
    with running(Settings(bundle=prm[1], port=free_port())) as server:
        answer = json.loads(run_example("steps", server, tmp_path))
    (steps,) = answer["steps"]
    assert [step["span"] for step in steps] == [[0, 25], [34, 63], [72, 88]]
    assert answer["rewards"] == [min(step["reward"] for step in steps)]


def test_trl(server, tiny_policy, tmp_path):
    before = server.metric("rewardserve_sequences_total", endpoint="/score", status="200")
    run_example("trl", server, tmp_path, **{"Qwen/Qwen2.5-0.5B-Instruct": str(tiny_policy)})
    assert server.metric("rewardserve_sequences_total", endpoint="/score", status="200") - before == 8


def test_openrlhf(server, tmp_path):
    answer = json.loads(run_example("openrlhf", server, tmp_path))
    assert len(answer["rewards"]) == 1 and answer["scores"] == answer["rewards"]


def test_verl(server, tmp_path):
    assert isinstance(float(run_example("verl", server, tmp_path)), float)


def test_batch_scoring(server, tmp_path):
    run_example("score", server, tmp_path)
    rows = pq.read_table(tmp_path / "scored.parquet").to_pylist()
    assert [row["id"] for row in rows] == [1, 2] and all(isinstance(row["reward"], float) for row in rows)


def test_evaluation(server, tmp_path):
    run_example("eval", server, tmp_path)
    figures = json.loads((tmp_path / "report.json").read_text())
    assert figures["subsets"][-1]["name"] == "all" and figures["subsets"][-1]["pairs"] > 1000
    assert (tmp_path / "report.html").read_text().count("<svg") == 4


def test_rewardbench2_on_the_hh_arrangement(server, tmp_path):
    table = run_example("rewardbench2", server, tmp_path)
    report = json.loads((tmp_path / "rb2.json").read_text())
    assert [s["name"] for s in report["subsets"]][-1] == "Ties" and report["reward"] == "raw"
    assert f"{100 * report['overall']:.1f}" in table.splitlines()[-2]


def test_slime(server, tmp_path):
    assert isinstance(json.loads(run_example("slime", server, tmp_path)), float)


def test_classify(server, tmp_path):
    (data,) = json.loads(run_example("classify", server, tmp_path))["data"]
    assert data["num_classes"] == 1 and len(data["probs"]) == 1


def test_the_readmes_one_request_per_endpoint(server, tmp_path):
    assert len(json.loads(run_example("readme-score", server, tmp_path))["rewards"]) == 2
    assert 0 < json.loads(run_example("readme-compare", server, tmp_path))["results"][0]["p_a_better"] < 1
    assert len(json.loads(run_example("readme-get-reward", server, tmp_path))["rewards"]) == 1
    assert json.loads(run_example("readme-classify", server, tmp_path))["data"][0]["num_classes"] == 1
    assert isinstance(json.loads(run_example("readme-slime", server, tmp_path)), float)
