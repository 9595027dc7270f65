"""The outermost middleware: every request's id, context, metrics and access-log line.

Plain ASGI, as every middleware here: no extra task or body copy per request, and the app's own
`receive` stays untouched, so routes can still see a client disconnect."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardserve.scoring.context import RequestContext, milliseconds
from rewardserve.scoring.metrics import Metrics
from rewardserve.service.handlers import internal_error_response

access_log = logging.getLogger("rewardserve.access")
logger = logging.getLogger("rewardserve")

# Echoed only if it is a plain token: it lands in log lines and response headers.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and scrapes every few seconds would drown the access log; they go to DEBUG.
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
# Nothing was sent: the client left before there was an answer (nginx's code for it).
CLIENT_CLOSED = 499
# Where a request's RequestContext travels in its ASGI scope (nothing goes through request.state).
SCOPE_KEY = "rewardserve.context"


def context_of(scope: Scope) -> RequestContext:
    return scope[SCOPE_KEY]


def new_id() -> str:
    return uuid.uuid4().hex


class AccessLog:
    """Gives every request an id (`X-Request-ID` echoed, or a new one) and its RequestContext
    (`scoring/context.py`), which the pipeline fills in; adds the context's timing headers and
    `X-Total-Time` (ms) to the answer; counts and times the request by endpoint and status, with
    its sequences; writes one JSON access line (id, status, items, sequences, tokens, latency;
    never the body or the key); and answers any fault nothing else handled with 500 and an
    error id, under which the traceback is logged."""

    def __init__(self, app: ASGIApp, metrics_of: Callable[[str | None], Metrics], known_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics_of = metrics_of  # where a request for a model (None: unnamed) is counted
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else new_id()
        context = scope[SCOPE_KEY] = RequestContext(request_id, started)
        status: int | None = None
        error_id: str | None = None

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in context.timings.headers() if context.timings else ():
                    headers.append(name, value)
                headers.append("X-Request-ID", request_id)
                headers.append("X-Total-Time", milliseconds(time.perf_counter() - started))
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception:
            error_id = new_id()[:16]
            logger.exception("unhandled error", extra={"fields": {"error_id": error_id, "request_id": request_id}})
            if status is not None:
                raise  # the answer is half sent; only dropping the connection is left
            await internal_error_response(error_id)(scope, receive, send_with_context)
        finally:
            self._record(scope, context, status or CLIENT_CLOSED, time.perf_counter() - started, error_id)

    def _record(self, scope: Scope, context: RequestContext, status: int, seconds: float, error_id: str | None) -> None:
        route = scope.get("route")
        path = scope["path"]
        endpoint = route.path if route is not None else path if path in self.known_paths else "unmatched"
        metrics = self.metrics_of(context.model)
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.request_seconds.labels(endpoint).observe(seconds)
        if context.sequences:
            metrics.request_sequences.labels(endpoint, str(status)).inc(context.sequences)
        client = scope.get("client")
        fields = {
            "request_id": context.request_id,
            "method": scope["method"],
            "path": endpoint,
            "status": status,
            "items": context.items,
            "sequences": context.sequences,
            "tokens": context.tokens,
            "latency_ms": round(seconds * 1000, 3),
            "client": client[0] if client else None,
        }
        error_id = error_id or context.error_id
        if error_id:
            fields["error_id"] = error_id
        quiet = path in _QUIET_PATHS and status == 200
        access_log.log(logging.DEBUG if quiet else logging.INFO, "request", extra={"fields": fields})
