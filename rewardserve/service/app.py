"""The app factory: `create_app(settings, models)` wires parts; it builds the scoring core from
the bundles only when none is passed in (`scoring/build.py`), and nothing at import time.

A request passes, outermost first: AccessLog (id, context, metrics, access log, last-resort
500), RequireApiKey (401 before the body is read), RefuseEarly (503 and 429 before the body is read),
BodyLimit (413), then its route (`routes.py`), which answers it through the scoring core's
pipeline (`scoring/pipeline.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from rewardserve import __version__
from rewardserve.compose.reward import composed_models
from rewardserve.scoring.build import bundle_models
from rewardserve.scoring.models import ServedModels
from rewardserve.scoring.pipeline import ScoringPipeline
from rewardserve.service import about
from rewardserve.service.access_log import AccessLog
from rewardserve.service.auth import ApiKeys, RequireApiKey
from rewardserve.service.endpoints import SCORING_PATHS
from rewardserve.service.handlers import install_error_handlers
from rewardserve.service.limits import BodyLimit, RefuseEarly
from rewardserve.service.routes import router
from rewardserve.service.settings import Settings

logger = logging.getLogger("rewardserve")

# Paths anyone may call when keys are set: probes, and the API's own description.
OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# What routers ask a replica before sending it work (about.py): open too, as their probes carry no key.
ROUTER_PATHS = frozenset({"/get_load", "/server_info", "/model_info", "/v1/models"})


def served_models(settings: Settings) -> ServedModels:
    """The bundles' models, and first the reward composed of them, when `settings` name a spec."""
    models = bundle_models(settings)
    return composed_models(settings.reward_spec, models, settings) if settings.reward_spec else models


def create_app(settings: Settings, models: ServedModels | ScoringPipeline | None = None) -> FastAPI:
    """The app serving `models` (or one pipeline), or the models of `settings`' bundles."""
    if isinstance(models, ScoringPipeline):
        models = ServedModels([models])
    models = models or served_models(settings)
    keys = ApiKeys(settings.api_keys.get_secret_value() if settings.api_keys else None, settings.api_keys_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up = asyncio.create_task(models.start())
        warm_up.add_done_callback(_log_warm_up_failure)
        yield
        warm_up.cancel()
        await models.stop()

    app = FastAPI(
        title="rewardserve",
        version=__version__,
        lifespan=lifespan,
        description="Scalar rewards and Bradley-Terry preferences from a reward-model bundle.",
    )
    app.state.settings = settings
    app.state.models = models
    app.state.pipeline = models.default
    app.include_router(router)
    app.include_router(about.router)
    install_error_handlers(app)

    # Added innermost first. Known paths let a 401 or 413 be counted under its endpoint.
    open_paths = OPEN_PATHS | ROUTER_PATHS | (frozenset() if settings.protect_metrics else {"/metrics"})
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RefuseEarly, paths=SCORING_PATHS, admission=models)
    app.add_middleware(RequireApiKey, keys=keys, open_paths=open_paths)
    routes = [*app.routes, *router.routes, *about.router.routes]  # FastAPI keeps included routers apart
    known_paths = frozenset(route.path for route in routes if hasattr(route, "path"))
    app.add_middleware(AccessLog, metrics_of=models.metrics_of, known_paths=known_paths)
    if keys.enabled:
        _declare_bearer_auth(app, open_paths)
    return app


def _log_warm_up_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("warm-up failed; /ready stays 503", exc_info=task.exception())


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
