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

from rewardserve.bundle.memory import MMAP_THRESHOLD, return_large_blocks
from rewardserve.compose.reward import ComposedReward
from rewardserve.scoring.build import resident_mib
from rewardserve.scoring.engine import BundleEngine
from rewardserve.scoring.models import ServedModels
from rewardserve.scoring.pipeline import ScoringPipeline
from rewardserve.scoring.threads import in_lower_priority_thread
from rewardserve.service.app import create_app, served_models
from rewardserve.service.logs import held_while_loading, logging_config, replay
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
        with held_while_loading() as loading_log:
            if return_large_blocks():
                logger.info("allocator: blocks of %d KiB or more are returned when freed", MMAP_THRESHOLD // 1024)
            models = in_lower_priority_thread(settings.worker_nice, lambda: _checked_models(settings))
            app = create_app(settings, models)
    except Exception as exc:  # the start-up boundary: whatever it is, say it in one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return _cannot_serve(reason)

    logging.config.dictConfig(logging_config())
    replay(loading_log)
    _log_start(settings, models)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False, timeout_graceful_shutdown=5
    )
    DrainingServer(config, app, settings.drain_timeout).run()
    return 0


def _checked_models(settings: Settings) -> ServedModels:
    """Every model (and composed reward) `settings` name, each model's engine probed."""
    models = served_models(settings)
    for served in models:
        if isinstance(served, ScoringPipeline):
            BundleEngine(served.batcher.engine.runtime).probe()
    return models


def _log_start(settings: Settings, models: ServedModels) -> None:
    """What is served where, on which engine, and the memory each model took."""
    where = f"http://{settings.host}:{settings.port}"
    for served in models:
        name = served.model.model_name
        if not isinstance(served, ScoringPipeline):
            assert isinstance(served, ComposedReward)
            components = ", ".join(f"{c.name} ({c.spec.type})" for c in served.components)
            logger.info("serving the composed reward %r on %s: %s", name, where, components)
            continue
        runtime = served.batcher.engine.runtime
        choice = runtime.choice
        logger.info("serving %r from %s on %s", name, runtime.directory, where)
        logger.info(
            "engine: %s on %s (%s; %s)", choice.precision, runtime.device, choice.reason, runtime.machine.describe()
        )
        logger.info("model %r: %d MiB resident", name, served.model.resident_mib or 0)
    if len(models) > 1:
        logger.info(
            "%d served: %d MiB resident in all; at most %d sequences queued in all",
            len(models),
            resident_mib(),
            models.max_in_flight,
        )


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
        models = self.app.state.models
        if self._draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self._draining
            return
        self._draining = True
        logger.info("signal %d: draining before shutdown", sig)
        self._loop.call_soon_threadsafe(self._start_drain, models)

    def _start_drain(self, models: ServedModels) -> None:
        self._drain = asyncio.ensure_future(self._drain_then_exit(models))

    async def _drain_then_exit(self, models: ServedModels) -> None:
        try:
            await models.drain(self.drain_timeout)
        finally:
            self.should_exit = True


def arguments(parser: argparse.ArgumentParser, name: str = "serve") -> None:
    parser.add_argument(
        "--bundle",
        action="append",
        metavar="[NAME=]PATH",
        help="bundle directory (or REWARDSERVE_BUNDLE); repeat as NAME=PATH to serve several models, the first "
        "the default, each chosen by a request's `model`",
    )
    parser.add_argument(
        "--reward",
        metavar="SPEC",
        help="a composed reward's spec (TOML; or REWARDSERVE_REWARD_SPEC), served as the default model",
    )
    parser.add_argument("--host", help="interface to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, help="default: 8000")
    parser.set_defaults(
        func=lambda args: serve(**bundle_settings(args.bundle), reward_spec=args.reward, host=args.host, port=args.port)
    )


def bundle_settings(bundles: list[str] | None) -> dict[str, Any]:
    """Settings for `--bundle [NAME=]PATH ...`: the first the default model (named NAME where
    given), the rest by their names. None: the environment's (REWARDSERVE_BUNDLE, _MODELS)."""
    if not bundles:
        return {}
    named = [bundle.split("=", 1) if "=" in bundle else [None, bundle] for bundle in bundles]
    if len(named) > 1 and any(name is None for name, _ in named):
        raise SystemExit("rewardserve: cannot serve: several bundles: name each, --bundle NAME=PATH")
    (first_name, first), *rest = named
    return {"bundle": first, "served_model_name": first_name, "models": dict(rest) or None}
