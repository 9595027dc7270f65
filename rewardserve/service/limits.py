"""Size limits on requests, checked before any work is queued: body bytes, items, characters."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardserve.service.errors import BodyTooLargeError, TextTooLongError, TooManyItemsError
from rewardserve.service.handlers import error_response
from rewardserve.service.settings import Settings


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


def check_items(items: Sequence[BaseModel], text_fields: Sequence[str], settings: Settings) -> None:
    """TooManyItemsError or TextTooLongError, naming the field and the limit."""
    _check_count("items", len(items), settings)
    for index, item in enumerate(items):
        for name in text_fields:
            _check_text(f"items[{index}].{name}", getattr(item, name), settings)


def check_lists(texts: dict[str, Sequence[str]], settings: Settings) -> None:
    """The same for a body of parallel lists (OpenRLHF's `query` and `prompts`)."""
    for name, values in texts.items():
        _check_count(name, len(values), settings)
        for index, text in enumerate(values):
            _check_text(f"{name}[{index}]", text, settings)


def _check_count(field: str, count: int, settings: Settings) -> None:
    if count > settings.max_items_per_request:
        raise TooManyItemsError(
            f"{field}: {count} items, at most {settings.max_items_per_request} per request (max_items_per_request)"
        )


def _check_text(path: str, text: str, settings: Settings) -> None:
    if len(text) > settings.max_text_chars:
        raise TextTooLongError(f"{path}: {len(text)} characters, at most {settings.max_text_chars} (max_text_chars)")
