"""`rewardserve score INPUT OUTPUT`: a reward column added to every row of JSONL, CSV or Parquet,
on a server or in-process, resumable after a crash, in bounded memory."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from live import free_port, running

from rewardserve.client import RewardClient
from rewardserve.client.batch_scoring import Columns, ScoringJobError, score_table
from rewardserve.client.scorers import LocalScorer, RemoteScorer
from rewardserve.service import Settings

ROWS = [
    {"id": i, "prompt": f"\n\nHuman: question {i}?\n\nAssistant:", "response": f" answer{' very' * (i % 7)} {i}"}
    for i in range(23)
]


@pytest.fixture(scope="module")
def url(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port())) as server:
        yield server.url


@pytest.fixture(scope="module")
def local(tiny_bundle):
    return LocalScorer(tiny_bundle)


@pytest.fixture(scope="module")
def expected(url) -> list[float]:
    with RewardClient(url) as client:
        return client.score([r["prompt"] for r in ROWS], [r["response"] for r in ROWS])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_row_gets_the_servers_reward_and_keeps_its_columns(url, tmp_path, expected):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    with RemoteScorer(url) as scorer:
        report = score_table(source, tmp_path / "out.jsonl", scorer, batch_rows=5, in_flight=3, progress=False)
    out = read_jsonl(tmp_path / "out.jsonl")
    assert report.rows == 23 and report.resumed_from == 0
    assert [{k: v for k, v in row.items() if k != "reward"} for row in out] == ROWS
    assert [row["reward"] for row in out] == pytest.approx(expected, abs=1e-6)
    assert not (tmp_path / "out.jsonl.progress").exists()


def test_in_process_scoring_gives_the_servers_rewards(local, tmp_path, expected):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    score_table(source, tmp_path / "out.jsonl", local, batch_rows=7, progress=False)
    assert [row["reward"] for row in read_jsonl(tmp_path / "out.jsonl")] == pytest.approx(expected, abs=1e-5)


def test_csv_to_parquet_and_back_with_chat_messages_as_json_cells(local, tmp_path):
    chat = [{"role": "user", "content": "question 0?"}, {"role": "assistant", "content": " answer 0"}]
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "prompt", "response", "messages"])
        writer.writeheader()
        writer.writerow({"id": 0, "prompt": "", "response": "", "messages": json.dumps(chat)})
        writer.writerow({"id": 1, "prompt": "\n\nHuman: question 0?", "response": " answer 0", "messages": ""})
    score_table(source, tmp_path / "out.parquet", local, batch_rows=1, progress=False)
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [row["id"] for row in table] == ["0", "1"]  # CSV cells are text, kept as they were
    assert table[0]["reward"] == pytest.approx(table[1]["reward"], abs=1e-6)  # the chat renders as the HH text
    score_table(
        tmp_path / "out.parquet", tmp_path / "again.csv", local, columns=Columns(reward="again"), progress=False
    )
    with (tmp_path / "again.csv").open(newline="") as f:
        again = list(csv.DictReader(f))
    assert json.loads(again[0]["messages"]) == chat
    assert float(again[0]["again"]) == pytest.approx(table[0]["reward"], abs=1e-6)


class CrashingScorer:
    """Scores `batches` batches with `scorer`, then fails as a killed process would."""

    def __init__(self, scorer, batches: int) -> None:
        self.scorer, self.left, self.name, self.items = scorer, batches, "crashing", 0

    def score_items(self, items):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        self.items += len(items)
        return self.scorer.score_items(items)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_crashed_job_resumes_after_its_last_committed_row(local, tmp_path, suffix):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    whole = tmp_path / f"whole{suffix}"
    score_table(source, whole, local, batch_rows=5, progress=False)
    output = tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        score_table(source, output, CrashingScorer(local, batches=2), batch_rows=5, progress=False)
    if suffix != ".parquet":  # half a batch written but never committed
        with output.open("ab") as f:
            f.write(b'{"id": 10, "prompt": "half a ro')
    resumed = CrashingScorer(local, batches=100)
    report = score_table(source, output, resumed, batch_rows=5, progress=False)
    assert report.resumed_from == 10 and report.rows == 23
    assert resumed.items == 13  # only the rows not committed before the crash
    assert read(output) == read(whole)


def read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    return read_jsonl(path)


def test_finished_outputs_and_other_jobs_are_not_overwritten_unless_asked(local, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    output = tmp_path / "out.jsonl"
    score_table(source, output, local, progress=False)
    with pytest.raises(ScoringJobError, match="exists and is complete; pass --overwrite"):
        score_table(source, output, local, progress=False)
    assert score_table(source, output, local, overwrite=True, progress=False).rows == 23
    with pytest.raises(KeyboardInterrupt):
        score_table(source, tmp_path / "b.jsonl", CrashingScorer(local, 1), batch_rows=5, progress=False)
    other = write_jsonl(tmp_path / "other.jsonl", ROWS[:3])
    with pytest.raises(ScoringJobError, match="interrupted run of another job \\(input, input_bytes differ\\)"):
        score_table(other, tmp_path / "b.jsonl", local, progress=False)


def test_a_row_without_a_response_stops_the_job_naming_its_line(local, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [*ROWS[:3], {"id": 3, "prompt": "p", "text": "no response"}])
    with pytest.raises(ScoringJobError, match="line 4: response: expected a string, got NoneType"):
        score_table(source, tmp_path / "out.jsonl", local, progress=False)


def test_parquet_rows_of_varying_columns_are_joined(local, tmp_path):
    rows = [{"response": "a", "note": None}, {"response": "b", "note": "x"}, {"response": "c", "extra": 1.5}]
    score_table(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.parquet", local, batch_rows=1, progress=False)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == ["response", "note", "reward", "extra"]
    assert out.schema.field("note").type == pa.string()
    assert out.to_pylist()[2]["note"] is None and out.to_pylist()[0]["extra"] is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rewardserve.cli", "score", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_command_scores_through_a_server_with_a_progress_bar(url, tmp_path, expected):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    done = run_cli(str(source), str(tmp_path / "out.csv"), "--url", url, "--batch-rows", "4")
    assert done.returncode == 0, done.stderr
    assert "rows/s" in done.stderr and "23/23" in done.stderr  # tqdm: count, rate and ETA
    assert f"{tmp_path / 'out.csv'}: 23 rows" in done.stdout
    assert [float(r["reward"]) for r in read(tmp_path / "out.csv")] == pytest.approx(expected, abs=1e-5)
    refused = run_cli(str(source), str(tmp_path / "out.csv"), "--url", url)
    assert refused.returncode == 2 and "exists and is complete" in refused.stderr


def peak_rss_mib(*args: str) -> float:
    process = subprocess.Popen([sys.executable, "-m", "rewardserve.cli", "score", *args], stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024


def test_memory_does_not_grow_with_the_number_of_rows(tiny_bundle, tmp_path):
    rows = [{"prompt": "", "response": f"{i} " + "word " * 40} for i in range(40_000)]
    small, large = write_jsonl(tmp_path / "small.jsonl", rows[:4_000]), write_jsonl(tmp_path / "large.jsonl", rows)
    common = ["--bundle", str(tiny_bundle), "--batch-rows", "512"]
    small_peak = peak_rss_mib(str(small), str(tmp_path / "small.parquet"), *common)
    large_peak = peak_rss_mib(str(large), str(tmp_path / "large.parquet"), *common)
    # 36,000 more rows would hold ~20 MiB of text and rewards if they were kept
    assert large_peak - small_peak < 10, (small_peak, large_peak)
    assert pq.ParquetFile(tmp_path / "large.parquet").metadata.num_rows == 40_000
