"""The app factory: `create_app(settings)` builds nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rewardserve import __version__
from rewardserve.bundle import Manifest
from rewardserve.service.batcher import Scored
from rewardserve.service.engine import ScoringService
from rewardserve.service.errors import ERROR_STATUS, ClientDisconnectedError, NotReadyError, TooManyItemsError
from rewardserve.service.metrics import Metrics
from rewardserve.service.middleware import RequestMetrics, milliseconds
from rewardserve.service.schemas import (
    CompareRequest,
    CompareResponse,
    CompareResult,
    ErrorResponse,
    ScoreRequest,
    ScoreResponse,
)
from rewardserve.service.settings import Settings

logger = logging.getLogger("rewardserve")
T = TypeVar("T")


def get_service(request: Request) -> ScoringService:
    service: ScoringService = request.app.state.service
    if not service.ready:
        raise NotReadyError("model is loading or the server is shutting down")
    return service


Service = Annotated[ScoringService, Depends(get_service)]


def create_app(settings: Settings, manifest: Manifest | None = None) -> FastAPI:
    """The app for `settings.bundle`; pass `manifest` when the bundle was verified already."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ScoringService(settings, metrics, manifest)
        app.state.service = service
        warm_up = asyncio.create_task(service.start())
        warm_up.add_done_callback(_log_warm_up_failure)
        yield
        warm_up.cancel()
        await service.stop()

    app = FastAPI(
        title="rewardserve",
        version=__version__,
        lifespan=lifespan,
        description="Scalar rewards and Bradley-Terry preferences from a reward-model bundle.",
    )

    for error_class, (status, error_type) in ERROR_STATUS.items():
        app.add_exception_handler(error_class, _error_handler(status, error_type))

    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.post("/score", response_model=ScoreResponse, responses={503: {"model": ErrorResponse}})
    async def score(body: ScoreRequest, service: Service, request: Request, response: Response) -> ScoreResponse:
        """Scalar rewards of (prompt, response) items, in request order."""
        _check_size(body.items, settings)
        request.state.sequences = len(body.items)
        work = service.score([i.prompt for i in body.items], [i.response for i in body.items])
        scored = await _unless_disconnected(request, work)
        _timing_headers(response, scored)
        return ScoreResponse(rewards=scored.rewards.tolist(), model=service.model_name)

    @app.post("/compare", response_model=CompareResponse, responses={503: {"model": ErrorResponse}})
    async def compare(body: CompareRequest, service: Service, request: Request, response: Response) -> CompareResponse:
        """Rewards of two responses to one prompt and the probability that `a` is preferred."""
        _check_size(body.items, settings)
        n = len(body.items)
        request.state.sequences = 2 * n
        prompts = [i.prompt for i in body.items]
        work = service.score(prompts * 2, [i.a for i in body.items] + [i.b for i in body.items])
        scored = await _unless_disconnected(request, work)
        _timing_headers(response, scored)
        reward_a, reward_b = scored.rewards[:n], scored.rewards[n:]
        p_a = service.preference_probability(reward_a, reward_b)
        return CompareResponse(
            results=[
                CompareResult(reward_a=a, reward_b=b, p_a_better=p)
                for a, b, p in zip(reward_a.tolist(), reward_b.tolist(), p_a.tolist(), strict=True)
            ],
            model=service.model_name,
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready(request: Request) -> dict[str, str]:
        """200 once the bundle is loaded and warmed up; 503 before and while shutting down."""
        get_service(request)
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _log_warm_up_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("warm-up failed; /ready stays 503", exc_info=task.exception())


async def _unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, or ClientDisconnectedError as soon as the client goes away. Cancelling
    the work cancels its batcher request, whose queued sequences are then dropped unscored."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task not in done:
        raise ClientDisconnectedError("the client disconnected before its rewards were ready")
    return task.result()


async def _client_gone(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (uvicorn sends it
    # when the connection closes, or once the response is complete).
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _timing_headers(response: Response, scored: Scored) -> None:
    """Where the request's time went, in milliseconds, as text-embeddings-inference reports it."""
    response.headers["X-Tokenization-Time"] = milliseconds(scored.tokenization_seconds)
    response.headers["X-Queue-Time"] = milliseconds(scored.queue_seconds)
    response.headers["X-Inference-Time"] = milliseconds(scored.inference_seconds)
    response.headers["X-Cached-Sequences"] = str(scored.cached)


def _check_size(items: list, settings: Settings) -> None:
    if len(items) > settings.max_items_per_request:
        raise TooManyItemsError(f"items: {len(items)} items, at most {settings.max_items_per_request} per request")


def _error_handler(status: int, error_type: str):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc), "error_type": error_type}, status_code=status)

    return handle
