"""`rewardserve serve`: check everything up front, then run uvicorn until SIGTERM, drain, exit 0."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import sys
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from rewardserve.bundle import BundleRuntime
from rewardserve.scoring.engine import BundleEngine
from rewardserve.scoring.pipeline import ScoringPipeline
from rewardserve.scoring.threads import in_lower_priority_thread
from rewardserve.service.app import bundle_pipeline, bundle_runtime, create_app
from rewardserve.service.logs import logging_config
from rewardserve.service.settings import Settings

logger = logging.getLogger("rewardserve")


def serve(**overrides: Any) -> int:
    """Serve with `overrides` over the REWARDSERVE_* environment. Returns the exit status: 0
    after a clean shutdown, 2 when the settings, the bundle or the keys file are unusable."""
    try:
        settings = Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as exc:
        return _cannot_serve("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    try:
        # Before binding the port, so a bad bundle is a one-line reason and not a crash loop
        # of half-started servers: checksums, the session, and one probe batch through it. On a
        # low-priority thread, so the thread pools it starts are low-priority (threads.py).
        runtime = in_lower_priority_thread(settings.worker_nice, lambda: _checked_runtime(settings))
        app = create_app(settings, bundle_pipeline(settings, runtime))
    except Exception as exc:  # the start-up boundary: whatever it is, say it in one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return _cannot_serve(reason)

    logging.config.dictConfig(logging_config())
    logger.info(
        "serving %r from %s on http://%s:%d", runtime.manifest.name, settings.bundle, settings.host, settings.port
    )
    choice = runtime.choice
    logger.info(
        "engine: %s on %s (%s; %s)", choice.precision, runtime.device, choice.reason, runtime.machine.describe()
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False, timeout_graceful_shutdown=5
    )
    DrainingServer(config, app, settings.drain_timeout).run()
    return 0


def _checked_runtime(settings: Settings) -> BundleRuntime:
    runtime = bundle_runtime(settings)
    BundleEngine(runtime).probe()
    return runtime


def _cannot_serve(reason: str) -> int:
    print(f"rewardserve: cannot serve: {reason}", file=sys.stderr)
    return 2


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM (or Ctrl-C) drains before shutting down: /ready
    turns 503 at once and new requests get 503 while every accepted request is answered (up to
    the drain timeout); then uvicorn closes its sockets as usual. A second signal exits at once.

    uvicorn re-raises a caught signal after shutting down, which would end the process with
    status 143; after a drain the shutdown was asked for and went well, so the status is 0.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain: asyncio.Task | None = None  # held so the task is not garbage-collected

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        pipeline = self.app.state.pipeline
        if self._draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self._draining
            return
        self._draining = True
        logger.info("signal %d: draining before shutdown", sig)
        self._loop.call_soon_threadsafe(self._start_drain, pipeline)

    def _start_drain(self, pipeline: ScoringPipeline) -> None:
        self._drain = asyncio.ensure_future(self._drain_then_exit(pipeline))

    async def _drain_then_exit(self, pipeline: ScoringPipeline) -> None:
        try:
            await pipeline.drain(self.drain_timeout)
        finally:
            self.should_exit = True


def arguments(parser: argparse.ArgumentParser, name: str = "serve") -> None:
    parser.add_argument("--bundle", help="bundle directory (or REWARDSERVE_BUNDLE)")
    parser.add_argument("--host", help="interface to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, help="default: 8000")
    parser.set_defaults(func=lambda args: serve(bundle=args.bundle, host=args.host, port=args.port))
