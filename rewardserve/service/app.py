"""The app factory: `create_app(settings, pipeline)` wires parts; it builds them from the bundle
only when none are passed in (`bundle_pipeline`), and nothing at import time.

A request passes, outermost first: AccessLog (id, context, metrics, access log, last-resort
500), RequireApiKey (401 before the body is read), RefuseEarly (503 and 429 before the body is read),
BodyLimit (413), then its route (`routes.py`), which answers it through the scoring core's
pipeline (`scoring/pipeline.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from rewardserve import __version__
from rewardserve.bundle import BundleRuntime, bundle_digest
from rewardserve.scoring.admit import Admission
from rewardserve.scoring.batcher import MicroBatcher
from rewardserve.scoring.cache import RewardCache
from rewardserve.scoring.engine import BundleEngine
from rewardserve.scoring.metrics import Metrics
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.monitoring import RewardMonitor
from rewardserve.scoring.pipeline import ScoringPipeline, warm_up_inputs
from rewardserve.scoring.retemplate import Retemplate
from rewardserve.scoring.shared_prompts import SharedPrompts
from rewardserve.scoring.threads import in_lower_priority_thread, lower_this_thread
from rewardserve.scoring.tokenize import Tokenize
from rewardserve.scoring.validate import Validate
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

# fp32 (and int8) on a CPU gains nothing from large batches: on an AMX Xeon, length-sorted HH
# sequences ran at 77 seq/s in batches of 4 (~600 tokens) and 61 in batches of 32; on an EPYC at
# the same speed from 256 to 8192 tokens. Small batches also group closer lengths when few
# sequences are queued, as with one sample per request: 512 tokens against 2048 cut padding at
# 128 clients x 1 item from 8.6% to 1.9% and served 14% more (`rewardserve bench`, docs/operate.md).
# bf16 on AMX wants more rows per matrix tile: the default bundle served 307 seq/s at 64 clients
# x 8 items with 4096 tokens against 226 with 512 (2048: 278, 8192: 280). A GPU needs large batches.
DEFAULT_BATCH_TOKENS = {"cpu": 512, "cpu bf16": 4096, "cuda": 32768}


# bf16 kernels round differently at different padded lengths (a reward of the default bundle
# moved by up to 1.6e-3 between alone and in a batch of 40); padded to a multiple of 16 within its
# own bucket, it moves by 0 (benchmarks/batch_invariance.py). fp32 moves by ~1e-7 without it.
BF16_LENGTH_BUCKET = 16


def default_length_bucket(runtime: BundleRuntime) -> int:
    return BF16_LENGTH_BUCKET if runtime.precision == "bf16" else 1


def default_batch_tokens(runtime: BundleRuntime) -> int:
    if runtime.device == "cuda":
        return DEFAULT_BATCH_TOKENS["cuda"]
    return DEFAULT_BATCH_TOKENS["cpu bf16" if runtime.precision == "bf16" else "cpu"]


def bundle_runtime(settings: Settings) -> BundleRuntime:
    """The bundle's runtime as `settings` ask for it: verified, its session open."""
    return BundleRuntime(
        settings.bundle, precision=settings.precision, threads=settings.threads, prefix_reuse=settings.prefix_reuse
    )


def bundle_pipeline(settings: Settings, runtime: BundleRuntime | None = None) -> ScoringPipeline:
    """Every stage for `settings.bundle` (or `runtime`, when it was opened and checked already)."""
    nice = settings.worker_nice
    # Loading verifies every checksum in the bundle before the server accepts anything. On a
    # low-priority thread, so the thread pools it starts are low-priority (threads.py).
    runtime = runtime or in_lower_priority_thread(nice, lambda: bundle_runtime(settings))
    manifest = runtime.manifest
    metrics = Metrics()
    metrics.engine_precision.labels(runtime.choice.precision, runtime.device).set(1)
    length_bucket = settings.length_bucket or default_length_bucket(runtime)
    if length_bucket > 1:
        logger.info("length buckets of %d tokens: a reward does not depend on its batch-mates", length_bucket)
    engine = BundleEngine(runtime, metrics, length_bucket)
    cache = RewardCache(bundle_digest(manifest), settings.cache_size) if settings.cache_size else None
    batch_tokens = settings.max_batch_tokens or default_batch_tokens(runtime)
    # Workers run below the event loop's priority, so that the loop answers 429s at once.
    lower = functools.partial(lower_this_thread, nice)
    prompts = shared_prompts(settings, runtime, metrics)
    batcher = MicroBatcher(engine, settings.max_batch_size, batch_tokens, metrics, cache, lower, prompts, length_bucket)
    return ScoringPipeline(
        validate=Validate(
            settings.max_items_per_request,
            settings.max_text_chars,
            settings.policy_format,
            outputs=manifest.outputs,
            max_steps=settings.max_steps_per_item,
            max_objectives=settings.max_objectives_per_request,
        ),
        admission=Admission(
            settings.max_queued_sequences, metrics, lambda: batcher.throughput, lambda: not engine.broken
        ),
        retemplate=Retemplate(settings.unparsed_policy_text),
        tokenize=Tokenize(runtime.encoder, manifest.outputs.steps),
        batcher=batcher,
        model=ServedModel(
            settings.served_model_name or manifest.name, manifest.calibration_temperature, manifest.outputs
        ),
        metrics=metrics,
        monitor=RewardMonitor(metrics.registry, manifest.reward_mean, manifest.reward_std, outputs=manifest.outputs),
        thread_initializer=lower,
        warm_up=warm_up_inputs(manifest.outputs),
    )


def shared_prompts(settings: Settings, runtime: BundleRuntime, metrics: Metrics) -> SharedPrompts | None:
    """Prompt sharing where the runtime has a prefix graph; the start log says which, and why not."""
    metrics.prefix_reuse.set(runtime.prefix is not None)
    if runtime.prefix is None:
        logger.info("prefix reuse: off: %s", runtime.prefix_refused)
        return None
    logger.info(
        "prefix reuse: on, at %s with %s (prompts of %d tokens or more)",
        runtime.choice.precision,
        runtime.graph.name,
        settings.prefix_min_tokens,
    )
    return SharedPrompts(
        settings.prefix_min_tokens,
        settings.prefix_cache_mb * 2**20,
        settings.prefix_cache_seconds,
        runtime.prefix.bytes_per_token,
        metrics,
    )


def create_app(settings: Settings, pipeline: ScoringPipeline | None = None) -> FastAPI:
    """The app serving `pipeline`, or a pipeline built from `settings.bundle`."""
    pipeline = pipeline or bundle_pipeline(settings)
    keys = ApiKeys(settings.api_keys.get_secret_value() if settings.api_keys else None, settings.api_keys_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warm_up = asyncio.create_task(pipeline.start())
        warm_up.add_done_callback(_log_warm_up_failure)
        yield
        warm_up.cancel()
        await pipeline.stop()

    app = FastAPI(
        title="rewardserve",
        version=__version__,
        lifespan=lifespan,
        description="Scalar rewards and Bradley-Terry preferences from a reward-model bundle.",
    )
    app.state.settings = settings
    app.state.pipeline = pipeline
    app.include_router(router)
    app.include_router(about.router)
    install_error_handlers(app)

    # Added innermost first. Known paths let a 401 or 413 be counted under its endpoint.
    open_paths = OPEN_PATHS | ROUTER_PATHS | (frozenset() if settings.protect_metrics else {"/metrics"})
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RefuseEarly, paths=SCORING_PATHS, admission=pipeline.admission)
    app.add_middleware(RequireApiKey, keys=keys, open_paths=open_paths)
    routes = [*app.routes, *router.routes, *about.router.routes]  # FastAPI keeps included routers apart
    known_paths = frozenset(route.path for route in routes if hasattr(route, "path"))
    app.add_middleware(AccessLog, metrics=pipeline.metrics, known_paths=known_paths)
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
