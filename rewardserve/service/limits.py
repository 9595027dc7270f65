"""What is refused before a request's body is read: 503 and 429 (RefuseEarly, by Admission's
decisions), then a body over its size limit (BodyLimit, 413). Items and characters are limited
once the body is parsed (scoring/validate.py)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardserve.scoring.errors import BodyTooLargeError, ServiceError
from rewardserve.scoring.models import ServedModels
from rewardserve.service.handlers import error_response


class RefuseEarly:
    """503 (warming up, broken, draining) and 429 (no room for even one more sequence) for
    scoring requests, before their body is read: under overload most of the excess is refused
    for the price of its headers, so the event loop stays free for the work it accepted. The
    decisions are Admission's (admit.py), over every served model (the request's is not known
    yet); a request that needs more room than its model has left is refused after parsing, when
    its size and model are known."""

    def __init__(self, app: ASGIApp, paths: frozenset[str], admission: ServedModels) -> None:
        self.app = app
        self.paths = paths
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            try:
                self.admission.check_ready()
                self.admission.check_room(1)
            except ServiceError as error:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, refused from its Content-Length before
    a byte is read, or as soon as a chunked body passes the limit. The app gets the body in one
    message, then the connection's own messages (so a route still sees a disconnect)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(f"{declared} bytes", scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody is left to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(f"more than {self.max_bytes} bytes", scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, size: str, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLargeError(f"body: {size}; the limit is {self.max_bytes} bytes (max_body_bytes)")
        await error_response(error)(scope, receive, send)
