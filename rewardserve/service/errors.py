"""Domain errors of the service and the one table that turns them into HTTP responses."""

from __future__ import annotations


class NotReadyError(Exception):
    """The model is still loading or warming up, or the server is shutting down."""


class TooManyItemsError(Exception):
    """More items in one request than the server accepts."""


# error class -> (HTTP status, error_type in the JSON body)
ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    NotReadyError: (503, "not_ready"),
    TooManyItemsError: (413, "too_many_items"),
}
