"""The body of every error answer (`handlers.py`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, starting with the field it is about.")
    error_type: str = Field(description="Stable machine-readable kind, e.g. overloaded, too_many_items.")
    error_id: str | None = Field(None, description="Server faults only: the id logged with the traceback.")
    detail: list[dict[str, Any]] | None = Field(None, description="Validation errors only: FastAPI's list.")
