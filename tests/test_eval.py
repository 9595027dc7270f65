"""`rewardserve eval DATA --report report.html`: pairwise accuracy overall and per source, margins,
calibration of the served probabilities, and the length-bias check, as JSON and as an HTML
page that a headless Chromium renders."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser import screenshot
from live import free_port, running

from rewardserve.client import RewardClient
from rewardserve.data.preferences import PreferenceExample
from rewardserve.eval.evaluate import build_report, compare_pairs, wilson_interval
from rewardserve.eval.metrics import calibration_curve, expected_calibration_error
from rewardserve.service import Settings

DATA = Path(__file__).parents[1] / "rewardserve" / "data" / "hh_rlhf"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[Path]:
    """The first 60 rows of two HH subsets, under their own names (the source of each pair)."""
    out = tmp_path_factory.mktemp("eval-data")
    files = []
    for name in ("helpful-base", "harmless-base"):
        with gzip.open(DATA / f"{name}-test.jsonl.gz", "rt") as f:
            rows = [next(f) for _ in range(60)]
        files.append(out / f"{name}.jsonl")
        files[-1].write_text("".join(rows))
    return files


@pytest.fixture(scope="module")
def url(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port())) as server:
        yield server.url


def run_eval(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rewardserve.cli", "eval", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def report(url, data, tmp_path_factory) -> tuple[Path, dict]:
    page = tmp_path_factory.mktemp("report") / "report.html"
    run_eval(*map(str, data), "--url", url, "--split", "all", "--report", str(page))
    return page, json.loads(page.with_suffix(".json").read_text())


def hh_pairs(files: list[Path]) -> list[tuple[str, str, str, str]]:
    """(source, prompt, chosen, rejected) as the HH transcripts split (the implicit prompt)."""
    from rewardserve.data.preferences import load_preferences

    examples, _ = load_preferences(files, split="all")
    return [(e.source, e.prompt, e.responses[0], e.responses[1]) for e in examples]


def test_accuracy_is_the_share_of_pairs_the_served_model_orders_as_the_humans_did(report, url, data):
    _, figures = report
    pairs = hh_pairs(data)
    with RewardClient(url) as client:
        results = client.compare([p for _, p, _, _ in pairs], [c for _, _, c, _ in pairs], [r for *_, r in pairs])
    gaps = np.array([r.reward_a - r.reward_b for r in results])
    subsets = {s["name"]: s for s in figures["subsets"]}
    assert subsets["all"]["pairs"] == len(pairs)
    assert subsets["all"]["accuracy"] == pytest.approx(np.mean((gaps > 0) + 0.5 * (gaps == 0)))
    harmless = np.array([source == "harmless-base" for source, *_ in pairs])
    assert subsets["harmless-base"]["pairs"] == harmless.sum()
    assert subsets["harmless-base"]["accuracy"] == pytest.approx(np.mean(gaps[harmless] > 0))
    assert subsets["helpful-base"]["pairs"] + subsets["harmless-base"]["pairs"] == len(pairs)
    p = np.array([r.p_a_better for r in results])
    assert subsets["all"]["ece"] == pytest.approx(expected_calibration_error(p))
    assert subsets["all"]["log_loss"] == pytest.approx(-np.mean(np.log(p)))
    assert sum(b["pairs"] for b in figures["calibration"]) == len(pairs)
    assert sum(figures["margin_histogram"]["counts"]) == len(pairs)
    assert figures["length"]["responses"] == 2 * len(pairs)


def test_in_process_evaluation_agrees_with_the_server(report, tiny_bundle, data):
    done = run_eval(*map(str, data), "--bundle", str(tiny_bundle), "--split", "all")
    served = {s["name"]: s for s in report[1]["subsets"]}
    line = next(line for line in done.stdout.splitlines() if line.startswith("all "))
    assert line.split()[1:3] == [str(served["all"]["pairs"]), f"{served['all']['accuracy']:.3f}"]


def test_a_chat_bundle_is_evaluated_on_each_conversation_as_its_model_card_scores_it(train_pairs, data, tmp_path):
    """HH transcripts reach a chat-layout bundle as their turns: the accuracy is the one the model's
    own class gives on `apply_chat_template` of each conversation."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardserve.data.hh import prompt_turns
    from rewardserve.data.preferences import load_preferences
    from rewardserve.export.onnx_export import export_bundle
    from rewardserve.testing.chat_models import build_chat_rm

    checkpoint = build_chat_rm("qwen3", tmp_path / "rm", [e.prompt + r for e in train_pairs[:200] for r in e.responses])
    examples, _ = load_preferences(data, split="all")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()

    def reward(prompt: str, response: str) -> tuple[float, int]:
        conversation = [*prompt_turns(prompt), {"role": "assistant", "content": response}]
        inputs = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            return float(model(**inputs).logits[0, 0]), inputs["input_ids"].shape[1]

    scored = [[reward(e.prompt, r) for r in e.responses] for e in examples]
    fitting = [e for e, s in zip(examples, scored, strict=True) if max(n for _, n in s) <= 1024]
    gaps = np.array([s[0][0] - s[1][0] for s in scored if max(n for _, n in s) <= 1024])
    rows = [{"prompt": e.prompt, "chosen": e.responses[0], "rejected": e.responses[1]} for e in fitting]
    (tmp_path / "fitting.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    parity = [(e.prompt, r) for e in fitting[:64] for r in e.responses]
    export_bundle(checkpoint, tmp_path / "bundle", parity, max_length=1024)
    done = run_eval(str(tmp_path / "fitting.jsonl"), "--bundle", str(tmp_path / "bundle"), "--split", "all")
    line = next(line for line in done.stdout.splitlines() if line.startswith("all "))
    # No gap within the fidelity contract's 2 x 1e-4 of zero, which float noise could flip.
    assert len(fitting) > 80 and np.abs(gaps).min() > 2e-4
    assert line.split()[1:3] == [str(len(fitting)), f"{np.mean(gaps > 0):.3f}"]


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    page, _ = report
    text = page.read_text()
    assert "<script" not in text and "<link" not in text and " src=" not in text  # self-contained
    assert text.count("<svg") == 4
    pixels = screenshot(page, tmp_path, 1200, 1800)
    ink = (pixels < 200).any(axis=2).mean()
    blue = ((pixels[..., 2] > 150) & (pixels[..., 0] < 90)).mean()  # the plots' bars and points
    orange = ((pixels[..., 0] > 200) & (pixels[..., 1] > 90) & (pixels[..., 1] < 150) & (pixels[..., 2] < 80)).mean()
    assert ink > 0.03, f"the page looks blank: {ink:.1%} of pixels inked"
    assert blue > 0.002 and orange > 0.0005, (blue, orange)


class LengthRewardModel:
    """A reward model that learned only length: reward = characters."""

    name = "length"

    def compare(self, prompts, a, b):
        from rewardserve.client import Comparison

        return [Comparison(len(x), len(y), float(len(x) > len(y))) for x, y in zip(a, b, strict=True)]


def test_the_length_bias_check_exposes_a_model_that_rewards_length():
    examples = [
        PreferenceExample.pair("p", "short but right", "a long rambling wrong answer", "s"),
        PreferenceExample.pair("p", "a long and correct answer", "no", "s"),
        PreferenceExample.pair("p", "yes", "a much longer bad response", "s"),
    ]
    pairs = compare_pairs(LengthRewardModel(), examples, progress=False)
    figures = build_report(pairs, model="length", scorer="test", data=[], split="all")
    bias = figures.length
    assert bias.spearman == pytest.approx(1.0) and bias.pearson == pytest.approx(1.0)
    assert (bias.chosen_longer_accuracy, bias.chosen_longer_pairs) == (1.0, 1)
    assert (bias.chosen_shorter_accuracy, bias.chosen_shorter_pairs) == (0.0, 2)
    assert figures.overall.longer_wins == figures.overall.accuracy == pytest.approx(1 / 3)


def test_calibration_bins_and_the_wilson_interval():
    p = np.array([0.55, 0.58, 0.45, 0.95, 0.99, 0.2])  # p(preferred wins); below 0.5 predicts wrong
    bins = calibration_curve(p, bins=5)
    assert [b.low for b in bins] == pytest.approx([0.5, 0.8, 0.9]) and [b.pairs for b in bins] == [3, 1, 2]
    assert bins[0].accuracy == pytest.approx(2 / 3) and bins[0].confidence == pytest.approx((0.55 + 0.58 + 0.55) / 3)
    assert bins[1].accuracy == 0.0  # p = 0.2: the model's winner is the rejected one, at 0.8
    low, high = wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)
