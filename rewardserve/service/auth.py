"""Optional API keys, checked as `Authorization: Bearer <key>` before a request body is read.

Keys come from REWARDSERVE_API_KEYS (comma-separated) and/or a file with one key per line.
The file is re-read whenever it changes (a rotated Kubernetes Secret swaps it atomically), so
keys are added and revoked without a restart. Only SHA-256 digests are kept, and a candidate is
compared with every one of them in constant time, so neither the key nor its length leaks
through timing. Keys never reach a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from rewardserve.scoring.errors import UnauthorizedError
from rewardserve.service.handlers import error_response

logger = logging.getLogger("rewardserve")


class KeysFileError(Exception):
    """The API keys file cannot be read at start-up."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_keys_file(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class ApiKeys:
    """The keys the server accepts now: the fixed ones plus the file's current content."""

    def __init__(self, keys: str | None = None, keys_file: Path | None = None) -> None:
        self._fixed = [_digest(k.strip()) for k in (keys or "").split(",") if k.strip()]
        self._file = keys_file
        self._file_digests: list[bytes] = []
        self._file_version: tuple[int, int, int] | None = None
        self.enabled = bool(self._fixed) or keys_file is not None
        if keys_file is not None:
            self._reload_if_changed(startup=True)

    def accepts(self, candidate: str) -> bool:
        self._reload_if_changed()
        given = _digest(candidate)
        matched = False
        for known in (*self._fixed, *self._file_digests):
            matched |= hmac.compare_digest(given, known)  # no early exit: every key costs the same
        return matched

    def _reload_if_changed(self, startup: bool = False) -> None:
        if self._file is None:
            return
        try:
            stat = os.stat(self._file)
            version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if version == self._file_version:
                return
            digests = [_digest(k) for k in read_keys_file(self._file)]
        except OSError as exc:
            if startup:
                raise KeysFileError(f"api_keys_file {self._file}: {exc.strerror}") from exc
            # A file briefly missing mid-rotation must not lock everyone out, nor let anyone in.
            logger.warning("cannot re-read the API keys file (%s); keeping the keys read before", exc.strerror)
            return
        self._file_digests, self._file_version = digests, version
        if not startup:
            logger.info("API keys file changed: %d keys", len(digests))


class RequireApiKey:
    """ASGI middleware: 401 for requests to anything but the open paths without a known key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, open_paths: frozenset[str]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        scheme, _, key = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key.strip() and self.keys.accepts(key.strip()):
            await self.app(scope, receive, send)
            return
        given = bool(scheme)
        message = "invalid API key" if given else "missing API key: send Authorization: Bearer <key>"
        await error_response(UnauthorizedError(message, key_given=given))(scope, receive, send)
