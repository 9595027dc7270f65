"""`rewardserve eval --benchmark rewardbench2 FILE` and `--benchmark rewardbench FILE`: a bundle's,
a chat RM's or a judge's figures on RewardBench 2 and RewardBench, scored as the `rewardbench`
package's own code scores them, the same in-process and through a server.

The files are small ones in the benchmarks' exact schemas, written here from the HH pairs we ship
(`rewardserve/testing/rewardbench_files.py`). The benchmark's code runs in its own venv
(`make install` writes `.venv-rewardbench`: its pins fight ours) on the same rewards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import screenshot
from live import free_port, running

from rewardserve.client.scorers import LocalScorer, RemoteScorer
from rewardserve.data.rewardbench import BenchmarkError, load_benchmark
from rewardserve.eval import rewardbench, rewardbench2
from rewardserve.eval.benchmark import evaluate_benchmark
from rewardserve.export.onnx_export import export_bundle
from rewardserve.export.source import OutputOptions
from rewardserve.service import Settings
from rewardserve.testing.chat_models import build_judge_lm
from rewardserve.testing.rewardbench_files import rewardbench2_rows, write_files, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PYTHON = os.environ.get("REWARDSERVE_REWARDBENCH_PYTHON", str(ROOT / ".venv-rewardbench" / "bin" / "python"))
BENCHMARKS = ["rewardbench2", "rewardbench"]
RULES = {"rewardbench2": rewardbench2, "rewardbench": rewardbench}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    second, first = write_files(tmp_path_factory.mktemp("rewardbench"))
    return {"rewardbench2": second, "rewardbench": first}


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def reference_figures(jobs: list[dict]) -> list[dict]:
    """The `rewardbench` package's figures for each {"benchmark", "rows", "rewards"} job."""
    assert Path(REFERENCE_PYTHON).is_file(), f"{REFERENCE_PYTHON}: make install writes the rewardbench venv"
    script = Path(__file__).with_name("rewardbench_reference.py")
    done = subprocess.run(
        [REFERENCE_PYTHON, str(script)], input=json.dumps(jobs), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def assert_same_figures(ours: dict, theirs: dict) -> None:
    assert ours["subsets"].keys() == theirs["subsets"].keys()
    for name, value in theirs["subsets"].items():
        assert ours["subsets"][name] == pytest.approx(value, abs=1e-12), name
    for name, value in theirs["sections"].items():
        assert ours["sections"][name] == pytest.approx(value, abs=1e-12), name


def exact_ties(rows: list[dict], seed: int, benchmark: str) -> list[list[float]]:
    """Rewards on a coarse grid (so that many tie exactly at the top, and Ties' correct answers
    often share one reward), from a seeded generator."""
    rng = np.random.default_rng(seed)
    counts = [r["total_completions"] for r in rows] if benchmark == "rewardbench2" else [2] * len(rows)
    return [(rng.integers(0, 3, n) / 2).tolist() for n in counts]


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_the_figures_equal_the_benchmark_own_code_on_a_model_and_on_exact_ties(benchmark, files, tiny_bundle):
    rows = rows_of(files[benchmark])
    scorer = LocalScorer(tiny_bundle)
    models = [p["rewards"] for p in evaluate_benchmark(scorer, files[benchmark], benchmark, where="")["prompts"]]
    rewards = [models] + [exact_ties(rows, seed, benchmark) for seed in range(6)]
    theirs = reference_figures([{"benchmark": benchmark, "rows": rows, "rewards": r} for r in rewards])
    prompts = load_benchmark(files[benchmark], benchmark)
    for each, reference in zip(rewards, theirs, strict=True):
        assert_same_figures(RULES[benchmark].figures(prompts, each), reference)


def test_the_ties_rule_reads_margins_between_correct_and_incorrect_completions(files):
    """One Ties prompt seen both ways, every correct answer above every incorrect one, the correct
    ones 1 apart and 3 above the rest: every term of the rule holds."""
    prompts = [p for p in load_benchmark(files["rewardbench2"], "rewardbench2") if p.id in ("ref:0", "tied:0")]
    ref, tied = prompts
    rewards = [[5.0] + [1.0] * (len(ref.completions) - 1), [5.0, 4.0] + [1.0] * (len(tied.completions) - 2)]
    score = rewardbench2.ties_score([(p.id, r, p.num_correct) for p, r in zip(prompts, rewards, strict=True)])
    assert score == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01 * np.tanh(3 / 1 - 1))
    rewards[1][1] = 0.5  # a correct answer below the incorrect ones: tied is not accurate, nor preferred
    score = rewardbench2.ties_score([(p.id, r, p.num_correct) for p, r in zip(prompts, rewards, strict=True)])
    assert score == pytest.approx(0.3 + 0.01 * np.tanh(-0.5 / 4.5 - 1))


@pytest.fixture(scope="module")
def judges(tmp_path_factory, judge_texts, heldout_pairs) -> dict[str, Path]:
    """A Qwen3-style LM exported as the yes/no (helpfulness) judge and as the pairwise judge."""
    lm = build_judge_lm("qwen3", tmp_path_factory.mktemp("judge-lm"), judge_texts)
    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    bundles = {}
    for judge in ("helpfulness", "pairwise"):
        out = tmp_path_factory.mktemp("bundles") / judge
        export_bundle(lm, out, parity, name=judge, max_length=1024, output_options=OutputOptions(judge=judge))
        bundles[judge] = out
    return bundles


@pytest.mark.parametrize("kind", ["default", "chat-rm", "yes-no-judge", "pairwise-judge"])
def test_a_model_scores_the_same_in_process_and_through_its_server(kind, request, files):
    bundle = {
        "default": lambda: request.getfixturevalue("tiny_bundle"),
        "chat-rm": lambda: request.getfixturevalue("trained_decoder_bundle"),  # Qwen3-shaped, --precision auto
        "yes-no-judge": lambda: request.getfixturevalue("judges")["helpfulness"],
        "pairwise-judge": lambda: request.getfixturevalue("judges")["pairwise"],
    }[kind]()
    local = LocalScorer(bundle)
    with running(Settings(bundle=bundle, port=free_port())) as server:
        remote = RemoteScorer(server.url)
        for benchmark in BENCHMARKS:
            here = evaluate_benchmark(local, files[benchmark], benchmark, where=str(bundle), progress=False)
            there = evaluate_benchmark(remote, files[benchmark], benchmark, where=server.url, progress=False)
            assert (here["precision"], here["judge"]) == (there["precision"], there["judge"])
            served = np.array([r for p in there["prompts"] for r in p["rewards"]])
            in_process = np.array([r for p in here["prompts"] for r in p["rewards"]])
            bar = 1e-5 if here["precision"] == "fp32" else 1e-3  # bf16's batch-mates bar
            np.testing.assert_allclose(served, in_process, atol=bar, rtol=0)
            assert len(set(np.round(served, 6))) > len(served) // 2  # continuous rewards, not a few levels
            near = sum(_top_gap(p["rewards"]) < 2 * bar for p in here["prompts"])
            for ours, theirs in zip(here["subsets"], there["subsets"], strict=True):
                assert ours["figure"] == pytest.approx(theirs["figure"], abs=near / ours["prompts"] + 1e-12)
    if kind == "pairwise-judge":  # rewards are Bradley-Terry scores: they sum to zero per prompt
        assert all(abs(sum(p["rewards"])) < 1e-9 for p in here["prompts"])


def _top_gap(rewards: list[float]) -> float:
    top = sorted(rewards, reverse=True)
    return top[0] - top[1]


def run_eval(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rewardserve.cli", "eval", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_cli_reads_the_parquet_and_its_report_opens_in_headless_chromium(files, tiny_bundle, tmp_path):
    parquet = tmp_path / "rewardbench2.parquet"
    pq.write_table(pa.Table.from_pylist(rows_of(files["rewardbench2"])), parquet)
    page = tmp_path / "report.html"
    done = run_eval("--benchmark", "rewardbench2", str(parquet), "--bundle", str(tiny_bundle), "--report", str(page))
    assert done.returncode == 0, done.stderr
    assert "%" in done.stderr or "completions" in done.stderr  # the progress bar
    report = json.loads(page.with_suffix(".json").read_text())
    assert [s["name"] for s in report["subsets"]] == ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]
    assert f"{100 * report['overall']:.1f}" in done.stdout.splitlines()[-2]
    assert sum(len(p["rewards"]) for p in report["prompts"]) == sum(
        r["total_completions"] for r in rows_of(files["rewardbench2"])
    )
    text = page.read_text()
    assert text.count('<section class="subset">') == 6 and "<script" not in text
    pixels = screenshot(page, tmp_path, 1200, 1600)
    assert (pixels < 200).any(axis=2).mean() > 0.03  # not blank
    assert ((pixels[..., 2] > 150) & (pixels[..., 0] < 90)).mean() > 0.002  # the subsets' bars


def _broken(rows: list[dict], tmp_path: Path, change) -> Path:
    rows = json.loads(json.dumps(rows))
    change(rows)
    return write_jsonl(rows, tmp_path / "broken.jsonl")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows[2].__setitem__("responses", rows[2].pop("chosen")), "line 3 (id '2'): chosen: missing"),
        (lambda rows: rows[4].__setitem__("total_completions", 5), "line 5 (id '4'): total_completions: 5, but"),
        (lambda rows: rows[1].__setitem__("num_correct", 2), "line 2 (id '1'): num_correct: 2, but chosen holds 1"),
        (lambda rows: rows[0].__setitem__("subset", "Maths"), "line 1 (id '0'): subset: 'Maths' is not one of"),
        (lambda rows: rows[-1].__setitem__("id", "tie:3"), "(id 'tie:3'): id: 'tie:3'; a Ties row's id is"),
        (lambda rows: rows.__setitem__(slice(None), [r for r in rows if r["subset"] != "Focus"]),
         "subset: no rows of 'Focus'"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_the_benchmark_is_refused_naming_the_row_and_field(change, message, tmp_path, tiny_bundle):
    path = _broken(rewardbench2_rows(), tmp_path, change)
    with pytest.raises(BenchmarkError) as error:
        load_benchmark(path, "rewardbench2")
    assert message in str(error.value)
    done = run_eval("--benchmark", "rewardbench2", str(path), "--bundle", str(tiny_bundle))
    assert done.returncode == 2 and message in done.stderr
