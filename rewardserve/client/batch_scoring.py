"""`rewardserve score INPUT OUTPUT`: a reward for every row of a table, every input column kept.

Rows stream through in batches of `batch_rows`, so memory stays flat however long the file.
Each batch is durable before the next is counted done: JSONL and CSV outputs are appended to
and their committed length is kept in `OUTPUT.progress`; Parquet output is written as one part
file per batch under `OUTPUT.parts/` and joined at the end. After a crash, the same command
carries on from the last committed row. The output format follows OUTPUT's extension.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rewardserve.client.scorers import Scorer
from rewardserve.data.tables import BadRow, count_rows, decode_json_cell, read_rows


class ScoringJobError(ValueError):
    """A job that cannot start or go on: a bad row, an output that exists, a changed input."""


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the texts, and which output column gets the reward."""

    prompt: str = "prompt"
    response: str = "response"
    messages: str = "messages"  # chat form, used when a row has it
    reward: str = "reward"

    def item(self, row: Mapping[str, Any], location: str) -> dict[str, Any]:
        """The `/score` item of a row: its messages, else its prompt (absent: "") and response."""
        messages = decode_json_cell(row.get(self.messages))  # JSON text in CSV
        if messages not in (None, ""):
            return {"messages": messages}
        prompt, response = row.get(self.prompt, ""), row.get(self.response)
        for column, value in ((self.prompt, prompt), (self.response, response)):
            if not isinstance(value, str):
                raise ScoringJobError(
                    f"{location}: {column}: expected a string, got {type(value).__name__} "
                    f"(columns are set with --prompt-column, --response-column, --messages-column)"
                )
        return {"prompt": prompt, "response": response}


@dataclass(frozen=True)
class JobReport:
    rows: int  # in the output now
    resumed_from: int  # rows already written before this run
    seconds: float


def score_table(
    source: Path,
    output: Path,
    scorer: Scorer,
    *,
    columns: Columns | None = None,
    batch_rows: int = 1024,
    in_flight: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> JobReport:
    """Score every row of `source` into `output`, resuming an interrupted run of the same job.

    `in_flight` batches are scored at once (more than one keeps a remote server busy while the
    next batch is sent); they are written in input order.
    """
    started = time.perf_counter()
    columns = columns or Columns()
    job = {"input": str(source.resolve()), "input_bytes": source.stat().st_size, "columns": vars(columns)}
    table = open_output(output, job, overwrite)
    total = count_rows(source)
    done = table.rows
    bar = tqdm(total=total, initial=done, unit=" rows", desc=f"scoring {source.name}", disable=not progress)
    pending: deque[tuple[list[dict], Future[list[float]]]] = deque()
    with ThreadPoolExecutor(in_flight) as pool:
        for batch in _batches(islice(read_rows(source), done, None), batch_rows):
            items = [columns.item(row, location) for location, row in batch]
            rows = [row for _, row in batch]
            pending.append((rows, pool.submit(scorer.score_items, items)))
            if len(pending) >= in_flight:
                _write(table, columns, *pending.popleft(), bar)
        while pending:
            _write(table, columns, *pending.popleft(), bar)
    bar.close()
    table.finish()
    return JobReport(rows=table.rows, resumed_from=done, seconds=time.perf_counter() - started)


def _batches(rows: Iterator[tuple[str, Any]], size: int) -> Iterator[list[tuple[str, dict]]]:
    while batch := list(islice(rows, size)):
        for location, row in batch:
            if isinstance(row, BadRow):
                raise ScoringJobError(f"{location}: {row}")
            if not isinstance(row, Mapping):
                raise ScoringJobError(f"{location}: expected an object, got {type(row).__name__}")
        yield batch


def _write(table: OutputTable, columns: Columns, rows: list[dict], rewards: Future[list[float]], bar: tqdm) -> None:
    scored = [{**row, columns.reward: reward} for row, reward in zip(rows, rewards.result(), strict=True)]
    table.append(scored)
    bar.update(len(scored))


# ---------------------------------------------------------------------------- resumable outputs


class OutputTable:
    """An output being written; `rows` is how many are durable."""

    rows: int

    def append(self, rows: list[dict]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


def open_output(path: Path, job: dict[str, Any], overwrite: bool) -> OutputTable:
    """The output for `job`: new, or an interrupted run of the same job to carry on."""
    name = path.name.lower()
    kinds: dict[str, type[OutputTable]] = {".jsonl": JsonlOutput, ".csv": CsvOutput, ".parquet": ParquetOutput}
    kind = next((k for suffix, k in kinds.items() if name.endswith(suffix)), None)
    if kind is None:
        raise ScoringJobError(f"{path}: unknown output format (expected .jsonl, .csv or .parquet)")
    return kind(path, job, overwrite)


def _write_json_atomically(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


def _check_same_job(state: dict[str, Any], job: dict[str, Any], where: Path) -> None:
    changed = [key for key in job if state.get(key) != job[key]]
    if changed:
        raise ScoringJobError(
            f"{where}: an interrupted run of another job ({', '.join(changed)} differ); "
            "finish that one, or pass --overwrite to start again"
        )


class _AppendedText(OutputTable):
    """JSONL or CSV, appended to; OUTPUT.progress holds the committed rows and bytes."""

    def __init__(self, path: Path, job: dict[str, Any], overwrite: bool) -> None:
        self.path = path
        self.progress = path.with_name(path.name + ".progress")
        self.job = job
        self.header: list[str] | None = None
        state: dict[str, Any] = {"rows": 0, "bytes": 0}
        if overwrite:
            self.progress.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        elif self.progress.exists():
            state = json.loads(self.progress.read_text())
            _check_same_job(state, job, self.progress)
            self.header = state.get("header")
        elif path.exists():
            raise ScoringJobError(f"{path}: exists and is complete; pass --overwrite to score again")
        self.rows, committed = state["rows"], state["bytes"]
        if committed and (not path.exists() or path.stat().st_size < committed):
            raise ScoringJobError(f"{path}: shorter than {self.progress} says; pass --overwrite to start again")
        self.file = open(path, "ab")  # noqa: SIM115 - open for the life of the job
        self.file.truncate(committed)  # drop a batch that was written but not committed
        self.file.seek(0, os.SEEK_END)
        self._commit()

    def append(self, rows: list[dict]) -> None:
        self.file.write(self._encode(rows).encode("utf-8"))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.rows += len(rows)
        self._commit()

    def _commit(self) -> None:
        state = {**self.job, "rows": self.rows, "bytes": self.file.tell(), "header": self.header}
        _write_json_atomically(self.progress, state)

    def finish(self) -> None:
        self.file.close()
        self.progress.unlink()

    def _encode(self, rows: list[dict]) -> str:
        raise NotImplementedError


class JsonlOutput(_AppendedText):
    def _encode(self, rows: list[dict]) -> str:
        return "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)


class CsvOutput(_AppendedText):
    """The first batch's columns are the header; list and dict cells are JSON text."""

    def _encode(self, rows: list[dict]) -> str:
        text = io.StringIO()
        if self.header is None:
            self.header = list(dict.fromkeys(key for row in rows for key in row))
            csv.writer(text).writerow(self.header)
        writer = csv.DictWriter(text, self.header)
        for row in rows:
            if extra := set(row) - set(self.header):
                raise ScoringJobError(
                    f"{self.path}: a row has columns {sorted(extra)} that the first rows lack; "
                    "write JSONL or Parquet for rows of varying columns"
                )
            writer.writerow({key: _csv_cell(value) for key, value in row.items()})
        return text.getvalue()


def _csv_cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, list | dict) else value


class ParquetOutput(OutputTable):
    """One Parquet part per batch under OUTPUT.parts/ (each renamed into place when complete),
    joined into OUTPUT by `finish`, one part at a time."""

    def __init__(self, path: Path, job: dict[str, Any], overwrite: bool) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.parts = path.with_name(path.name + ".parts")
        if overwrite:
            shutil.rmtree(self.parts, ignore_errors=True)
            path.unlink(missing_ok=True)
        elif self.parts.exists():
            _check_same_job(json.loads((self.parts / "job.json").read_text()), job, self.parts)
        elif path.exists():
            raise ScoringJobError(f"{path}: exists and is complete; pass --overwrite to score again")
        self.parts.mkdir(exist_ok=True)
        _write_json_atomically(self.parts / "job.json", job)
        self.files = sorted(self.parts.glob("part-*.parquet"))
        self.rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def append(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = self.parts / f"part-{len(self.files):06d}.parquet"
        temporary = target.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows), temporary)
        os.replace(temporary, target)
        self.files.append(target)
        self.rows += len(rows)

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        temporary = self.path.with_name(self.path.name + ".tmp")
        if not self.files:
            pq.write_table(pa.table({}), temporary)
        else:
            # A column all null in one batch has type null there, and JSONL rows may lack a
            # column: unify the parts' schemas, and fill what a part lacks with nulls.
            schema = pa.unify_schemas([pq.read_schema(f) for f in self.files], promote_options="permissive")
            with pq.ParquetWriter(temporary, schema) as writer:
                for part in self.files:
                    table = pq.read_table(part)
                    columns = [
                        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
                        for f in schema
                    ]
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        os.replace(temporary, self.path)
        shutil.rmtree(self.parts)
