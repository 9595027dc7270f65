"""Every error the app answers, in one shape: `{"error": message, "error_type": kind}`, plus
`error_id` for server faults (the same id is logged with the traceback) and `detail` for
validation errors (FastAPI's list, so clients written for FastAPI keep working). Messages name
the field they are about: `items[3].prompt: ...`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rewardserve.scoring.errors import (
    ClientDisconnectedError,
    ComponentError,
    ComponentTimeoutError,
    DeadlineExceededError,
    EngineError,
    QueueFullError,
    ServiceError,
    ShuttingDownError,
    TooLargeError,
    UnauthorizedError,
    UnavailableError,
    UnhealthyError,
    UnknownModelError,
    UnprocessableError,
    UnrenderableChatError,
)

# Draining (and not yet ready) replicas ask keep-alive clients to reconnect, so that a load
# balancer sends them elsewhere.
_GO_ELSEWHERE = {"Connection": "close", "Retry-After": "1"}

# The one table from errors to HTTP, looked up along each error's class hierarchy (the most
# specific entry wins), so a new subclass answers its family's status.
HTTP_STATUS: dict[type[ServiceError], tuple[int, dict[str, str]]] = {
    ServiceError: (500, {}),
    UnavailableError: (503, _GO_ELSEWHERE),
    UnhealthyError: (503, {}),  # a probe's answer, not a client's: no reconnect needed
    ShuttingDownError: (503, _GO_ELSEWHERE),
    TooLargeError: (413, {}),
    UnknownModelError: (404, {}),
    ComponentError: (502, {}),
    ComponentTimeoutError: (504, {}),
    UnrenderableChatError: (422, {}),
    UnprocessableError: (422, {}),
    QueueFullError: (429, {}),
    DeadlineExceededError: (504, {}),
    UnauthorizedError: (401, {}),
    EngineError: (500, {}),
    # nginx's "client closed request": never seen by the client, but counted in the metrics
    ClientDisconnectedError: (499, {}),
}


def http_status(error: ServiceError) -> tuple[int, dict[str, str]]:
    """The status and fixed headers of `error`: its nearest class in HTTP_STATUS."""
    return next(HTTP_STATUS[cls] for cls in type(error).__mro__ if cls in HTTP_STATUS)


def _headers_of(error: ServiceError) -> dict[str, str]:
    """Headers that depend on the error's own fields."""
    if isinstance(error, QueueFullError):
        return {"Retry-After": str(error.retry_after)}
    if isinstance(error, UnauthorizedError):
        # RFC 6750: name the error only when a token was presented.
        return {
            "WWW-Authenticate": 'Bearer realm="rewardserve"' + (', error="invalid_token"' if error.key_given else "")
        }
    return {}


def error_response(error: ServiceError) -> JSONResponse:
    """The response for a ServiceError."""
    status, headers = http_status(error)
    body: dict[str, Any] = {"error": str(error), "error_type": error.error_type}
    if isinstance(error, EngineError):
        body["error_id"] = error.error_id
    return JSONResponse(body, status_code=status, headers={**headers, **_headers_of(error)})


def internal_error_response(error_id: str) -> JSONResponse:
    """The answer to a fault nothing else handled; the traceback is logged under `error_id`."""
    body = {"error": f"internal error (error id {error_id})", "error_type": "internal", "error_id": error_id}
    return JSONResponse(body, status_code=500)


def field_path(loc: Sequence[str | int]) -> str:
    """`("body", "items", 3, "prompt")` -> `items[3].prompt`; headers as `header x-request-timeout`."""
    if loc and loc[0] == "header":
        return "header " + ".".join(map(str, loc[1:]))
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


# A model validator's message may start with the field it is about, relative to its model
# ("prompt: required ..."); that field joins the path instead of following it.
_LEADING_FIELD = re.compile(r"(?P<field>[A-Za-z_][\w\[\]]*): (?P<rest>.*)", re.DOTALL)


def _message(error: dict[str, Any]) -> str:
    """`items[0].prompt: required ...` for one of FastAPI's validation errors."""
    path, message = field_path(error["loc"]), error["msg"]
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
        if leading := _LEADING_FIELD.fullmatch(message):
            field = leading["field"]
            path = field if path == "body" else f"{path}{field}" if field.startswith("[") else f"{path}.{field}"
            message = leading["rest"]
    return f"{path}: {message}"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Inputs are not echoed back: a wrong type on `items` would return the whole body.
    errors = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
    for error in errors:  # a custom validator's ValueError would otherwise encode as {}
        if "ctx" in error:
            error["ctx"] = {k: str(v) if isinstance(v, Exception) else v for k, v in error["ctx"].items()}
    first = errors[0]
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    if first["type"] == "json_invalid":
        message = f"body: invalid JSON at character {first['loc'][-1]}: {first['ctx']['error']}"
    else:
        message = f"{_message(first)}{more}"
    body = {"error": message, "error_type": "validation_error", "detail": errors}
    return JSONResponse(jsonable_encoder(body), status_code=422)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message = str(exc.detail)
    if exc.status_code == 400:  # FastAPI could not parse the body; say why
        cause = exc.__cause__
        if isinstance(cause, UnicodeDecodeError):
            message = f"body: not valid UTF-8 ({cause.reason} at byte {cause.start})"
        elif isinstance(cause, RecursionError):
            message = "body: JSON nested too deeply"
    error_type = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return JSONResponse({"error": message, "error_type": error_type}, exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app raises answers in the one shape above."""

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)  # type: ignore[arg-type]

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
