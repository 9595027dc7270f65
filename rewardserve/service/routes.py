"""The HTTP routes: each scoring endpoint (`endpoints/`) mounted at its paths, its parsed body
and the request's context answered through the scoring core's pipeline (`endpoints/base.py`'s
`answer`); and the probes and metrics."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import UnhealthyError
from rewardserve.scoring.models import Served
from rewardserve.service.access_log import context_of
from rewardserve.service.endpoints import ENDPOINTS, Endpoint
from rewardserve.service.endpoints.base import answer
from rewardserve.service.schemas import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        401: "Missing or unknown API key (when keys are set).",
        404: "A `model` this server does not serve, when it serves several; the error lists the served ones.",
        413: "Body, item count, a text or (with truncate=false) a sequence over its limit.",
        429: "The queue is full; retry after `Retry-After` seconds.",
        500: "The engine failed on this request's batch; `error_id` is logged with the traceback.",
        503: "Warming up or shutting down.",
        504: "The X-Request-Timeout deadline passed; the request's queued work was dropped.",
    }.items()
}

router = APIRouter()

RequestTimeout = Annotated[
    float | None,
    Header(
        gt=0,
        allow_inf_nan=False,
        description="Seconds from arrival after which the request is answered 504 and its queued work dropped.",
    ),
]


def scoring(request: Request, body: Any, timeout: float | None) -> tuple[Served, RequestContext]:
    """The pipeline of the model `body` names (`models.py`), and the request's context with its
    deadline and a way to see its client go.
    (Plain calls, not FastAPI dependencies: each dependency costs every request ~40 us of
    FastAPI's bookkeeping. Readiness and room were checked before the body was read:
    limits.RefuseEarly.)"""
    context = context_of(request.scope)
    timeout = timeout or request.app.state.settings.request_timeout
    context.deadline = None if timeout is None else context.arrived + timeout
    context.disconnected = lambda: _client_gone(request)
    pipeline = request.app.state.models.pick(getattr(body, "model", None))  # every body may name one
    context.model = pipeline.model.model_name
    return pipeline, context


async def _client_gone(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (uvicorn sends it
    # when the connection closes, or once the response is complete).
    while (await request.receive())["type"] != "http.disconnect":
        pass


def mount(router: APIRouter, endpoint: Endpoint) -> None:
    """Route each of `endpoint`'s paths to the pipeline. The handler's signature is the
    endpoint's own, so FastAPI parses and validates its body and documents it."""

    async def handler(body: Any, request: Request, x_request_timeout: float | None = None) -> Any:
        pipeline, context = scoring(request, body, x_request_timeout)
        return await answer(pipeline, context, endpoint, body)

    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=endpoint.body),
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter(
                "x_request_timeout", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=RequestTimeout
            ),
        ],
        return_annotation=endpoint.response,
    )
    for path in endpoint.paths:
        router.add_api_route(
            path,
            handler,
            methods=["POST"],
            response_model=endpoint.response,
            response_model_exclude_none=endpoint.omit_none,
            responses=ERRORS,
            name=path.strip("/").replace("/", "_"),
            description=inspect.cleandoc(type(endpoint).__doc__ or ""),
        )


for _endpoint in ENDPOINTS:
    mount(router, _endpoint)


@router.get("/health", responses={503: {"model": ErrorResponse}})
async def health(request: Request) -> dict[str, str]:
    """200 while the process can serve (liveness); 503 once the engine is broken beyond repair."""
    if not request.app.state.models.healthy():
        raise UnhealthyError("the engine is broken: its reopened session fails too; restart the process")
    return {"status": "ok"}


@router.get("/ready", responses={503: {"model": ErrorResponse}})
async def ready(request: Request) -> dict[str, str]:
    """200 once every model is loaded and warmed up; 503 before, and at once on SIGTERM."""
    request.app.state.models.check_ready()
    return {"status": "ready"}


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics (needs a key when `protect_metrics` is set)."""
    registry = request.app.state.models.registry  # with several models, each sample labelled model_name
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
