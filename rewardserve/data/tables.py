"""Rows in files, read as a stream: JSONL (optionally .gz), JSON (a list of rows), CSV, Parquet,
or a local HF `datasets` directory (`save_to_disk`).

Torch-free and pandas-free. Rows come one at a time, so a file of millions of rows is read in
bounded memory (except .json and datasets directories, which are loaded whole by nature).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path


class TableError(ValueError):
    """A file that cannot be read as a table (unknown format, not a list of rows)."""


class BadRow(ValueError):
    """A line that is not a row (e.g. invalid JSON); yielded in the row's place, not raised."""


# Longest suffix first: ".json.gz" is JSONL, ".json" a list.
FORMATS = {
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".json": "json",
    ".csv": "csv",
}


def table_format(path: Path) -> str:
    """jsonl, json, csv, parquet or datasets; TableError for anything else."""
    if path.is_dir():
        return "datasets"
    name = path.name.lower()
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    raise TableError(f"{path}: unknown format (expected .jsonl[.gz], .json, .parquet, .csv or a datasets directory)")


def read_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    """(location, row) for every row, in file order; a line that is no row comes as a BadRow.
    CSV cells are strings (callers decode JSON cells they expect)."""
    return _READERS[table_format(path)](path)


def count_rows(path: Path) -> int:
    """How many rows `read_rows` yields (blank JSONL lines excluded), without keeping them."""
    kind = table_format(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if kind == "jsonl":
        with _open_text(path) as f:
            return sum(1 for line in f if line.strip())
    return sum(1 for _ in read_rows(path))


def _open_text(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    with _open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as e:
                yield f"line {number}", BadRow(f"invalid JSON ({e.msg})")


def _json_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise TableError(f"{path}: expected a JSON list of rows")
    for number, row in enumerate(rows, start=1):
        yield f"row {number}", row


def _csv_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield f"line {reader.line_num}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    import pyarrow.parquet as pq

    rows = (row for batch in pq.ParquetFile(path).iter_batches() for row in batch.to_pylist())
    for number, row in enumerate(rows, start=1):
        yield f"row {number}", row


def _datasets_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        if "train" not in data and len(data) != 1:
            raise TableError(f"{path}: a DatasetDict needs a 'train' split or exactly one split (has {list(data)})")
        data = data["train"] if "train" in data else next(iter(data.values()))
    for number, row in enumerate(data, start=1):
        yield f"row {number}", row


_READERS = {
    "jsonl": _jsonl_rows,
    "json": _json_rows,
    "csv": _csv_rows,
    "parquet": _parquet_rows,
    "datasets": _datasets_rows,
}


def decode_json_cell(cell: object) -> object:
    """A CSV cell holding a JSON list or object, decoded; anything else unchanged."""
    if isinstance(cell, str) and cell.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    return cell
