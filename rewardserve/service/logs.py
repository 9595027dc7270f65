"""Structured logs: one JSON object per line on stderr, for the server and uvicorn alike.

Fields passed as `extra={"fields": {...}}` become top-level keys; a traceback becomes the
`traceback` key. Access lines come from `rewardserve.access` (see middleware.RequestContext).
"""

from __future__ import annotations

import json
import logging
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
