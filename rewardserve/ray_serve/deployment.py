"""rewardserve in Ray Serve replicas: each replica builds the scoring core from the settings (its
bundles, and a composed reward where a spec is named), serves the same HTTP API through Ray
Serve's ingress (the FastAPI app `service/app.py` builds, middleware, errors and metrics
included), and answers in-cluster calls through its handle without HTTP:

    from ray import serve
    from rewardserve.ray_serve import reward_app

    handle = serve.run(reward_app({"bundle": "/models/bundle"}, num_replicas=2), route_prefix="/")
    rewards = (await handle.call.remote("/score", {"items": [...]}))["rewards"]

Batching is rewardserve's own, per replica: the MicroBatcher mixes every caller's sequences,
groups them by length, shares a GRPO group's prompt and keeps rewards batch-invariant, which Ray
Serve's `@serve.batch` (requests batched as they arrive, by count) does not; measured side by
side, it also served 1.05-1.25x more (benchmarks/ray_batching.py). Ray Serve routes requests to
replicas and autoscales them on their ongoing requests (`autoscaling_config`).
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from ray.serve import Application

from rewardserve.bundle.memory import return_large_blocks
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import ServiceError
from rewardserve.service.app import create_app, served_models
from rewardserve.service.endpoints import ENDPOINTS
from rewardserve.service.endpoints.base import answer
from rewardserve.service.handlers import http_status
from rewardserve.service.settings import Settings

ENDPOINT_OF = {path: endpoint for endpoint in ENDPOINTS for path in endpoint.paths}


class HandleError(Exception):
    """What a handle call gets instead of an answer: the HTTP status and body the same request
    would get over HTTP. (Plain arguments, so that Ray can carry it back to the caller.)"""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(status, error_type, message)
        self.status, self.error_type, self.message = status, error_type, message

    def __str__(self) -> str:
        return f"{self.status} {self.error_type}: {self.message}"


@serve.ingress()
class RewardServer:
    """One replica: the core built from `settings` (REWARDSERVE_* names, as keyword values)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = Settings(**settings)
        return_large_blocks()  # a replica is a server process of its own (bundle/memory.py says why)
        self.models = served_models(self.settings)
        self.http = create_app(self.settings, self.models)

    def __serve_build_asgi_app__(self) -> Any:
        return self.http  # its lifespan warms the models up; /ready says when

    async def call(self, path: str, body: dict[str, Any], request_id: str = "handle") -> Any:
        """The answer of `path` (an HTTP scoring path: /score, /compare, /get_reward, ...) to
        `body`, from this replica's core, as JSON values; HandleError with the status and error
        the HTTP API would answer."""
        endpoint = ENDPOINT_OF.get(path)
        if endpoint is None:
            raise HandleError(404, "not_found", f"path: {path!r} is not a scoring path ({', '.join(ENDPOINT_OF)})")
        try:
            parsed = endpoint.body.model_validate(body)
            pipeline = self.models.pick(getattr(parsed, "model", None))
            context = RequestContext(request_id, time.perf_counter(), model=pipeline.model.model_name)
            response = await answer(pipeline, context, endpoint, parsed)
        except ServiceError as error:
            raise HandleError(http_status(error)[0], error.error_type, str(error)) from None
        except ValueError as error:  # pydantic's ValidationError: the body's schema
            raise HandleError(422, "invalid_request", str(error)) from None
        return response.model_dump(exclude_none=endpoint.omit_none) if hasattr(response, "model_dump") else response

    def check_health(self) -> None:
        """Ray Serve restarts a replica whose engine is broken beyond repair."""
        if not self.models.healthy():
            raise RuntimeError("the engine is broken: its reopened session fails too")


def reward_app(
    settings: dict[str, Any],
    *,
    num_replicas: int | None = None,
    autoscaling_config: dict[str, Any] | None = None,
    ray_actor_options: dict[str, Any] | None = None,
) -> Application:
    """The Ray Serve application of replicas serving `settings`: `num_replicas` of them, or as
    many as `autoscaling_config` asks (Ray Serve's: min_replicas, max_replicas,
    target_ongoing_requests, ...). Each replica takes one CPU unless `ray_actor_options` says
    otherwise; its engine threads are `settings["threads"]`, default every CPU it may use."""
    options: dict[str, Any] = {"ray_actor_options": ray_actor_options or {"num_cpus": 1}}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas or 1
    # Long GRPO groups queue behind each other in a replica's batcher, not in Ray's router.
    options["max_ongoing_requests"] = 256
    return serve.deployment(RewardServer, name="rewardserve", **options).bind(settings)
