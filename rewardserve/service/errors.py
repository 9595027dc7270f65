"""Domain errors of the service and the one table that turns them into HTTP responses."""

from __future__ import annotations

from rewardserve.service.batcher import ShuttingDownError


class NotReadyError(Exception):
    """The model is still loading or warming up, or the server is shutting down."""


class TooManyItemsError(Exception):
    """More items in one request than the server accepts."""


class ClientDisconnectedError(Exception):
    """The client went away before its rewards were ready; its queued sequences were dropped."""


# error class -> (HTTP status, error_type in the JSON body)
ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    NotReadyError: (503, "not_ready"),
    ShuttingDownError: (503, "shutting_down"),
    TooManyItemsError: (413, "too_many_items"),
    # nginx's "client closed request": never seen by the client, but counted in the metrics
    ClientDisconnectedError: (499, "client_closed_request"),
}
