"""Request metrics as plain ASGI middleware: no extra task or body copy per request, and the
app's own `receive` stays untouched, so routes can still see a client disconnect."""

from __future__ import annotations

import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardserve.service.metrics import Metrics


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


class RequestMetrics:
    """Counts requests (and the sequences routes report in `request.state.sequences`) by
    endpoint and status, times them end to end, and adds the `X-Total-Time` header (ms)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding

        async def send_with_total_time(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Total-Time", milliseconds(time.perf_counter() - started))
            await send(message)

        try:
            await self.app(scope, receive, send_with_total_time)
        finally:
            route = scope.get("route")
            endpoint = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
            sequences = scope.get("state", {}).get("sequences")
            if sequences:
                self.metrics.request_sequences.labels(endpoint, str(status)).inc(sequences)
