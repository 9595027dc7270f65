"""The models one server scores with, by name, each with its own pipeline (engine, batcher,
queue budget, metrics). A request names its model in `model`, as vLLM and the SGLang gateway
route; the first model is the default, for requests that name none. With one model served,
every request gets it whatever it names (a router's alias, a trainer's checkpoint path), as
before; with several, an unknown name is refused with the served names (404, as vLLM answers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from rewardserve.bundle.outputs import Scores
from rewardserve.scoring.admit import Admission
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import QueueFullError, UnknownModelError
from rewardserve.scoring.metrics import Metrics
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.validate import Inputs, Validate


class Served(Protocol):
    """What a server serves under a name: a model's ScoringPipeline, or a composed reward
    (`rewardserve/compose/`). Every transport reads an endpoint's body with `validate`'s checks
    and answers from `scores` and `model`."""

    model: ServedModel
    validate: Validate
    admission: Admission
    metrics: Metrics

    @property
    def max_length(self) -> int: ...

    async def scores(self, context: RequestContext, inputs: Inputs) -> Scores: ...

    async def start(self) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    async def stop(self) -> None: ...


class ServedModels:
    def __init__(self, pipelines: Sequence[Served]) -> None:
        if not pipelines:
            raise ValueError("no model to serve")
        self.by_name = {pipeline.model.model_name: pipeline for pipeline in pipelines}
        if len(self.by_name) < len(pipelines):
            names = [pipeline.model.model_name for pipeline in pipelines]
            twice = next(name for name in names if names.count(name) > 1)
            raise ValueError(f"two models are named {twice!r}: name each bundle (--bundle NAME=PATH)")
        self.default = pipelines[0]
        self.registry = self.default.metrics.registry if len(pipelines) == 1 else _labelled_registry(self.by_name)

    def __iter__(self) -> Iterator[Served]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def pick(self, name: str | None) -> Served:
        """The pipeline of the model `name`: the default when none is named or one is served."""
        if name is None or len(self.by_name) == 1:
            return self.default
        if name not in self.by_name:
            raise UnknownModelError(f"model: {name!r} is not served here; served: {', '.join(self.by_name)}")
        return self.by_name[name]

    def metrics_of(self, name: str | None) -> Metrics:
        """Where a request for `name` is counted: its model's metrics, else the default's."""
        return self.by_name.get(name or "", self.default).metrics

    # ------------------------------------------------------------------ admission, in total

    @property
    def in_flight_sequences(self) -> int:
        return sum(pipeline.admission.in_flight_sequences for pipeline in self)

    @property
    def max_in_flight(self) -> int:
        return sum(pipeline.admission.max_in_flight for pipeline in self)

    @property
    def ready(self) -> bool:
        return all(pipeline.admission.ready for pipeline in self)

    def healthy(self) -> bool:
        return all(pipeline.admission.healthy() for pipeline in self)

    def check_ready(self) -> None:
        """503 unless every model takes work (a replica is ready when all it serves are)."""
        for pipeline in self:
            pipeline.admission.check_ready()

    def check_room(self, count: int) -> None:
        """429 unless some model has room for `count` more sequences: before the body is read,
        the model is not known; its own budget is checked once it is (Admission.permit)."""
        errors = []
        for pipeline in self:
            try:
                pipeline.admission.check_room(count)
                return
            except QueueFullError as error:
                errors.append(error)
        raise min(errors, key=lambda error: error.retry_after)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Warm every model up, one after another (they share the CPUs)."""
        for pipeline in self:
            await pipeline.start()

    async def drain(self, timeout: float) -> None:
        """Drain each in turn, within `timeout` in all: a composed reward, served first, still
        needs its models while its own requests finish. New requests are refused from the
        first drain on (`check_ready` asks every model)."""
        deadline = time.monotonic() + timeout
        for pipeline in self:
            await pipeline.drain(max(deadline - time.monotonic(), 0.0))

    async def stop(self) -> None:
        await asyncio.gather(*(pipeline.stop() for pipeline in self))


class _ModelLabelled(Collector):
    """Every model's metrics, each sample with a `model_name` label (vLLM's label): one family
    per metric name, as Prometheus' text format allows one HELP and TYPE per name."""

    def __init__(self, by_name: dict[str, Served]) -> None:
        self.by_name = by_name

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, pipeline in self.by_name.items():
            for family in pipeline.metrics.registry.collect():
                labelled = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit)
                )
                for sample in family.samples:
                    labels = {"model_name": name, **sample.labels}
                    labelled.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
        yield from families.values()


def _labelled_registry(by_name: dict[str, Served]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_ModelLabelled(by_name))
    return registry
