"""The service's errors: one hierarchy under ServiceError, each class naming its `error_type`.

Plain exceptions that import nothing from the service, so every stage (validation, admission,
the batcher, the engine) raises them without knowing HTTP. `service/handlers.py` alone turns
them into responses, looking each class's status up along its hierarchy.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Anything the service refuses or fails to do for one request."""

    error_type = "internal"


class UnavailableError(ServiceError):
    """The server takes no work now (503)."""

    error_type = "unavailable"


class NotReadyError(UnavailableError):
    """The model is still warming up, or the engine is broken."""

    error_type = "not_ready"


class ShuttingDownError(UnavailableError):
    """The server is draining or stopped before this request's sequences were scored."""

    error_type = "shutting_down"


class UnhealthyError(UnavailableError):
    """The engine is broken beyond reopening its session: the process should be restarted."""

    error_type = "unhealthy"


class TooLargeError(ServiceError):
    """Something in the request is over a limit (413)."""

    error_type = "too_large"


class BodyTooLargeError(TooLargeError):
    """The request body is over `max_body_bytes`."""

    error_type = "body_too_large"


class TooManyItemsError(TooLargeError):
    """More items in one request than the server accepts."""

    error_type = "too_many_items"


class TextTooLongError(TooLargeError):
    """A prompt or response over `max_text_chars`."""

    error_type = "text_too_long"


class SequenceTooLongError(TooLargeError):
    """A sequence over the model's length in a request that asked not to truncate, or a judge's text
    over it once its prompt's earliest turns are gone (its rubric is never cut)."""

    error_type = "sequence_too_long"


class TooManyStepsError(TooLargeError):
    """A response with more steps than `max_steps_per_item` (process reward models)."""

    error_type = "too_many_steps"


class TooManyObjectivesError(TooLargeError):
    """A request asking for more objectives than `max_objectives_per_request`."""

    error_type = "too_many_objectives"


class UnprocessableError(ServiceError):
    """A well-formed request this bundle's model cannot answer as asked."""

    error_type = "unprocessable"


class InvalidStepsError(UnprocessableError):
    """Steps the model cannot read: none, steps sent to a model without step rewards, or step
    separators that tokenizing did not keep."""

    error_type = "invalid_steps"


class UnknownObjectiveError(UnprocessableError):
    """An objective the bundle's model does not have (or objectives asked of a model without them)."""

    error_type = "unknown_objective"


class UnknownModelError(ServiceError):
    """A `model` that this server does not serve, when it serves several (404, as vLLM answers)."""

    error_type = "model_not_found"


class ComponentError(ServiceError):
    """A composed reward's component (a remote server, a generation engine) failed, and the spec
    gives it no fallback (502)."""

    error_type = "component_failed"


class ComponentTimeoutError(ComponentError):
    """A composed reward's component took longer than its timeout, and has no fallback (504)."""

    error_type = "component_timeout"


class InvalidLabelError(UnprocessableError):
    """An item's label that a composed reward's rule needs and cannot read (missing, unparseable)."""

    error_type = "invalid_label"


class UnrenderableChatError(ServiceError):
    """Chat messages that the bundle's chat template refuses or cannot split into prompt and response."""

    error_type = "invalid_conversation"


class UnparseablePolicyTextError(UnrenderableChatError):
    """Policy-formatted text that its format (or any known format) does not parse into a conversation."""

    error_type = "unparseable_policy_text"


class QueueFullError(ServiceError):
    """Accepting the request would take the queue over `max_queued_sequences`."""

    error_type = "overloaded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds until the queue has room, at the engine's recent pace


class DeadlineExceededError(ServiceError):
    """The request's deadline passed before its rewards were ready; its queued work was dropped."""

    error_type = "deadline_exceeded"


class UnauthorizedError(ServiceError):
    """No API key, or one the server does not know."""

    error_type = "unauthorized"

    def __init__(self, message: str, *, key_given: bool) -> None:
        super().__init__(message)
        self.key_given = key_given


class EngineError(ServiceError):
    """The engine failed on a batch holding this request's sequences (logged under `error_id`)."""

    error_type = "engine_error"

    def __init__(self, message: str, error_id: str) -> None:
        super().__init__(message)
        self.error_id = error_id


class ClientDisconnectedError(ServiceError):
    """The client went away before its rewards were ready; its queued sequences were dropped."""

    error_type = "client_closed_request"
