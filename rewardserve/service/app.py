"""The app factory: `create_app(settings)` builds nothing at import time.

A request passes, outermost first: RequestContext (id, metrics, access log, last-resort 500),
RequireApiKey (401 before the body is read), RefuseWhenFull (429 before the body is read),
BodyLimit (413), then the route: item and text limits (413), admission to the queue (429),
tokenization, the batcher, and its deadline (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rewardserve import __version__, choice
from rewardserve.bundle import BundleRuntime
from rewardserve.service.auth import ApiKeys, RequireApiKey
from rewardserve.service.batcher import Scored, ShuttingDownError
from rewardserve.service.errors import (
    ClientDisconnectedError,
    DeadlineExceededError,
    NotReadyError,
    UnhealthyError,
)
from rewardserve.service.handlers import install_error_handlers
from rewardserve.service.limits import BodyLimit
from rewardserve.service.metrics import Metrics
from rewardserve.service.middleware import RefuseWhenFull, RequestContext, milliseconds
from rewardserve.service.schemas import (
    CompareRequest,
    CompareResponse,
    CompareResult,
    ErrorResponse,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RankingResponse,
    ScoreRequest,
    ScoreResponse,
)
from rewardserve.service.scoring import ScoringService
from rewardserve.service.settings import Settings

logger = logging.getLogger("rewardserve")
T = TypeVar("T")

# Paths anyone may call when keys are set: probes, and the API's own description.
OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})

SCORING_PATHS = frozenset({"/score", "/compare", "/get_reward"})

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        401: "Missing or unknown API key (when keys are set).",
        413: "Body, item count, a text or (with truncate=false) a sequence over its limit.",
        429: "The queue is full; retry after `Retry-After` seconds.",
        500: "The engine failed on this request's batch; `error_id` is logged with the traceback.",
        503: "Warming up or shutting down.",
        504: "The X-Request-Timeout deadline passed; the request's queued work was dropped.",
    }.items()
}

RequestTimeout = Annotated[
    float | None,
    Header(
        gt=0,
        allow_inf_nan=False,
        description="Seconds from arrival after which the request is answered 504 and its queued work dropped.",
    ),
]


def ready_service(request: Request) -> ScoringService:
    """The service, if it takes work now; else ShuttingDownError or NotReadyError (503)."""
    service: ScoringService = request.app.state.service
    if service.draining:
        raise ShuttingDownError("the server is shutting down; retry on another replica")
    if not service.ready:
        raise NotReadyError("the model is warming up, or the engine is broken")
    return service


async def get_service(request: Request) -> ScoringService:
    # async: FastAPI would run a plain function on a worker thread for every request
    return ready_service(request)


Service = Annotated[ScoringService, Depends(get_service)]


def create_app(settings: Settings, runtime: BundleRuntime | None = None) -> FastAPI:
    """The app for `settings.bundle`; pass `runtime` when the bundle was opened and checked already."""
    metrics = Metrics()
    keys = ApiKeys(settings.api_keys.get_secret_value() if settings.api_keys else None, settings.api_keys_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ScoringService(settings, metrics, runtime)
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
    install_error_handlers(app)

    @app.post("/score", response_model=ScoreResponse, responses=ERRORS)
    async def score(
        body: ScoreRequest,
        service: Service,
        request: Request,
        response: Response,
        x_request_timeout: RequestTimeout = None,
    ) -> ScoreResponse:
        """Scalar rewards of (prompt, response) or chat `messages` items, in request order."""
        _report(request, items=len(body.items), sequences=len(body.items))
        work = service.score(service.inputs.score(body.items), truncate=body.truncate)
        scored = await _scored(request, response, work, x_request_timeout or settings.request_timeout)
        return ScoreResponse(rewards=scored.rewards.tolist(), model=service.model_name)

    @app.post("/compare", response_model=CompareResponse | RankingResponse, responses=ERRORS)
    async def compare(
        body: CompareRequest,
        service: Service,
        request: Request,
        response: Response,
        x_request_timeout: RequestTimeout = None,
    ) -> CompareResponse | RankingResponse:
        """Pairs (`items`): both rewards and the probability that `a` is preferred. One prompt
        with K `responses`: rewards, the ranking, and Plackett-Luce and pairwise probabilities."""
        timeout = x_request_timeout or settings.request_timeout
        if body.ranked:
            pairs = service.inputs.ranking(body)
            _report(request, items=1, sequences=len(pairs))
            scored = await _scored(request, response, service.score(pairs, truncate=body.truncate), timeout)
            return _ranking(scored.rewards, service, body.pairwise)
        n = len(body.items)
        _report(request, items=n, sequences=2 * n)
        work = service.score(service.inputs.compare(body.items), truncate=body.truncate)
        scored = await _scored(request, response, work, timeout)
        reward_a, reward_b = scored.rewards[:n], scored.rewards[n:]
        p_a = choice.p_better(reward_a, reward_b, service.temperature)
        return CompareResponse(
            results=[
                CompareResult(reward_a=a, reward_b=b, p_a_better=p)
                for a, b, p in zip(reward_a.tolist(), reward_b.tolist(), p_a.tolist(), strict=True)
            ],
            model=service.model_name,
        )

    @app.post("/get_reward", response_model=OpenRLHFRewardResponse, responses=ERRORS)
    async def get_reward(
        body: OpenRLHFRewardRequest,
        service: Service,
        request: Request,
        response: Response,
        x_request_timeout: RequestTimeout = None,
    ) -> OpenRLHFRewardResponse:
        """OpenRLHF's remote reward protocol: pass `--remote_rm_url http://HOST:PORT/get_reward`."""
        _report(request, items=len(body.query), sequences=len(body.query))
        work = service.score(service.inputs.openrlhf(body))
        scored = await _scored(request, response, work, x_request_timeout or settings.request_timeout)
        rewards = scored.rewards.tolist()
        return OpenRLHFRewardResponse(rewards=rewards, scores=rewards)

    @app.get("/health", responses={503: {"model": ErrorResponse}})
    async def health(request: Request) -> dict[str, str]:
        """200 while the process can serve (liveness); 503 once the engine is broken beyond repair."""
        service: ScoringService | None = getattr(request.app.state, "service", None)
        if service is not None and not service.healthy:
            raise UnhealthyError("the engine is broken: its reopened session fails too; restart the process")
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready(request: Request) -> dict[str, str]:
        """200 once the bundle is loaded and warmed up; 503 before, and at once on SIGTERM."""
        ready_service(request)
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (needs a key when `protect_metrics` is set)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Added innermost first. Known paths let a 401 or 413 be counted under its endpoint.
    open_paths = OPEN_PATHS if settings.protect_metrics else OPEN_PATHS | {"/metrics"}
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    service = lambda: getattr(app.state, "service", None)  # noqa: E731 - set by the lifespan
    app.add_middleware(RefuseWhenFull, paths=SCORING_PATHS, service=service)
    app.add_middleware(RequireApiKey, keys=keys, open_paths=open_paths)
    known_paths = frozenset(route.path for route in app.routes)
    app.add_middleware(RequestContext, metrics=metrics, known_paths=known_paths)
    if keys.enabled:
        _declare_bearer_auth(app, open_paths)
    return app


def _log_warm_up_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("warm-up failed; /ready stays 503", exc_info=task.exception())


def _ranking(rewards: np.ndarray, service: ScoringService, pairwise: bool) -> RankingResponse:
    temperature = service.temperature
    matrix = choice.p_better(rewards[:, None], rewards[None, :], temperature).tolist() if pairwise else None
    return RankingResponse(
        rewards=rewards.tolist(),
        ranking=choice.ranking(rewards).tolist(),
        p_best=choice.p_first(rewards, temperature).tolist(),
        p_better=matrix,
        model=service.model_name,
    )


def _report(request: Request, **counts: int) -> None:
    """What the access log and metrics say about this request (items, sequences, tokens)."""
    for name, value in counts.items():
        setattr(request.state, name, value)


async def _scored(
    request: Request, response: Response, work: Coroutine[Any, Any, Scored], timeout: float | None
) -> Scored:
    """`work`'s rewards within `timeout` seconds of the request's arrival (None: no deadline),
    with the timing headers set on `response`."""
    deadline = None if timeout is None else request.state.arrived + timeout
    scored = await _answer(request, work, deadline)
    _timing_headers(request, response, scored)
    return scored


async def _answer(request: Request, work: Coroutine[Any, Any, T], deadline: float | None) -> T:
    """`work`'s result; or ClientDisconnectedError as soon as the client goes away, or
    DeadlineExceededError at the deadline. Either way the work is cancelled, and so is its
    batcher request, whose queued sequences are then dropped unscored."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    wait = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
    try:
        done, _ = await asyncio.wait((task, watcher), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    if watcher in done:
        raise ClientDisconnectedError("the client disconnected before its rewards were ready")
    waited = time.perf_counter() - request.state.arrived
    raise DeadlineExceededError(f"deadline: no rewards after {waited:.3f} s; the request's queued work was dropped")


async def _client_gone(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (uvicorn sends it
    # when the connection closes, or once the response is complete).
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _timing_headers(request: Request, response: Response, scored: Scored) -> None:
    """Where the request's time went, in milliseconds, as text-embeddings-inference reports it."""
    request.state.tokens = scored.tokens
    response.headers["X-Tokenization-Time"] = milliseconds(scored.tokenization_seconds)
    response.headers["X-Queue-Time"] = milliseconds(scored.queue_seconds)
    response.headers["X-Inference-Time"] = milliseconds(scored.inference_seconds)
    response.headers["X-Cached-Sequences"] = str(scored.cached)


def _declare_bearer_auth(app: FastAPI, open_paths: frozenset[str]) -> None:
    """Say in the OpenAPI document which operations need `Authorization: Bearer`, so /docs and
    schema-driven clients send the key (the check itself is RequireApiKey's)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema["paths"].items():
                if path not in open_paths:
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
