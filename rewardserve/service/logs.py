"""Structured logs: one JSON object per line on stderr, for the server and uvicorn alike.

Fields passed as `extra={"fields": {...}}` become top-level keys; a traceback becomes the
`traceback` key. Access lines come from `rewardserve.access` (see middleware.RequestContext).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def logging_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn's `log_config`: everything as JSON lines."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
            for name in ("rewardserve", "uvicorn", "uvicorn.error")
        },
    }


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_while_loading() -> Iterator[list[logging.LogRecord]]:
    """The server's records while it loads (length buckets, prefix reuse and its budget), held back:
    the log is set up only once loading succeeded, so that a server that cannot start says why in
    one line. The caller replays them then (`replay`); before, they fell below the default level."""
    logger, held = logging.getLogger("rewardserve"), _Held()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(held)
    try:
        yield held.records
    finally:
        logger.removeHandler(held)
        logger.setLevel(level)


def replay(records: list[logging.LogRecord]) -> None:
    """Records held while loading, through the handlers now set up."""
    for record in records:
        logging.getLogger(record.name).handle(record)
