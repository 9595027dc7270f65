"""Domain errors of the service and the one table that gives each its HTTP status.

Plain exceptions, so the batcher and the engine can raise them without knowing HTTP;
`service/handlers.py` turns them into responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardserve.service.batcher import ShuttingDownError


class NotReadyError(Exception):
    """The model is still warming up, the engine is broken, or the server is draining."""


class UnhealthyError(Exception):
    """The engine is broken beyond reopening its session: the process should be restarted."""


class BodyTooLargeError(Exception):
    """The request body is over `max_body_bytes`."""


class TooManyItemsError(Exception):
    """More items in one request than the server accepts."""


class TextTooLongError(Exception):
    """A prompt or response over `max_text_chars`."""


class SequenceTooLongError(Exception):
    """A sequence over the model's length in a request that asked not to truncate."""


class UnrenderableChatError(Exception):
    """Chat messages that the bundle's chat template refuses or cannot split into prompt and response."""


class QueueFullError(Exception):
    """Accepting the request would take the queue over `max_queued_sequences`."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class DeadlineExceededError(Exception):
    """The request's deadline passed before its rewards were ready; its queued work was dropped."""


class UnauthorizedError(Exception):
    """No API key, or one the server does not know."""

    def __init__(self, message: str, *, key_given: bool) -> None:
        super().__init__(message)
        # RFC 6750: name the error only when a token was presented.
        challenge = 'Bearer realm="rewardserve"' + (', error="invalid_token"' if key_given else "")
        self.headers = {"WWW-Authenticate": challenge}


class EngineError(Exception):
    """The engine failed on a batch holding this request's sequences (logged under `error_id`)."""

    def __init__(self, message: str, error_id: str) -> None:
        super().__init__(message)
        self.error_id = error_id


class ClientDisconnectedError(Exception):
    """The client went away before its rewards were ready; its queued sequences were dropped."""


@dataclass(frozen=True)
class HttpError:
    status: int
    error_type: str
    headers: dict[str, str] = field(default_factory=dict)


# Draining replicas ask keep-alive clients to reconnect, so a load balancer sends them elsewhere.
_GO_ELSEWHERE = {"Connection": "close", "Retry-After": "1"}

ERROR_STATUS: dict[type[Exception], HttpError] = {
    NotReadyError: HttpError(503, "not_ready", _GO_ELSEWHERE),
    ShuttingDownError: HttpError(503, "shutting_down", _GO_ELSEWHERE),
    UnhealthyError: HttpError(503, "unhealthy"),
    BodyTooLargeError: HttpError(413, "body_too_large"),
    TooManyItemsError: HttpError(413, "too_many_items"),
    TextTooLongError: HttpError(413, "text_too_long"),
    SequenceTooLongError: HttpError(413, "sequence_too_long"),
    UnrenderableChatError: HttpError(422, "invalid_conversation"),
    QueueFullError: HttpError(429, "overloaded"),
    DeadlineExceededError: HttpError(504, "deadline_exceeded"),
    UnauthorizedError: HttpError(401, "unauthorized"),
    EngineError: HttpError(500, "engine_error"),
    # nginx's "client closed request": never seen by the client, but counted in the metrics
    ClientDisconnectedError: HttpError(499, "client_closed_request"),
}
