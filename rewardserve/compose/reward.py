"""ComposedReward: a spec's components, served under the spec's name like a model (`Served`,
scoring/models.py), so that every protocol answers it through the same endpoints.

One request: every component runs at once on its sequences (served models through their own
pipelines, which batch them with everyone else's; rules in their worker; remote servers and
judges over HTTP), each within its timeout. A component that fails or times out fails the
request with a status naming it (502, 504), unless the spec gives it a fallback: then the
fallback stands in, and the answer (`NAME_fallback`, 1 per item) and the metrics say so. Never a
silent zero. Then the values are normalised and combined (combine.py), and each component's value
travels beside the reward (Scores.components: /score's `components`, OpenRLHF's `extra_logs`,
verl's `reward_extra_info`, slime's details).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Protocol

import numpy as np
from prometheus_client import Counter, Histogram, Summary

from rewardserve.bundle.outputs import Scores
from rewardserve.compose.combine import Normalizer, combined
from rewardserve.compose.components.base import Component, Item, items_of
from rewardserve.compose.components.format_rule import FormatRule
from rewardserve.compose.components.generation_judge import GenerationJudge
from rewardserve.compose.components.length_rule import LengthRule
from rewardserve.compose.components.math_rule import MathRule
from rewardserve.compose.components.remote import RemoteReward
from rewardserve.compose.components.served_model import ServedModelComponent
from rewardserve.compose.spec import (
    Component as ComponentSpec,
)
from rewardserve.compose.spec import (
    FormatComponent,
    JudgeComponent,
    LengthComponent,
    MathComponent,
    ModelComponent,
    RemoteComponent,
    RewardSpec,
    load_spec,
)
from rewardserve.scoring.admit import Admission
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.errors import ComponentError, ComponentTimeoutError, EngineError
from rewardserve.scoring.metrics import LATENCY_BUCKETS, Metrics
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.models import Served, ServedModels
from rewardserve.scoring.pipeline import ScoringPipeline, watched
from rewardserve.scoring.validate import Inputs, Validate

logger = logging.getLogger("rewardserve")


class Limits(Protocol):
    """The request limits a composed reward reads like a model (the server's Settings)."""

    max_items_per_request: int
    max_text_chars: int
    policy_format: str
    max_queued_sequences: int


class ComposedReward:
    def __init__(self, spec: RewardSpec, served: dict[str, ScoringPipeline], limits: Limits) -> None:
        self.spec = spec
        self.components = [component(name, c, served) for name, c in spec.components.items()]
        self.normalizers = {
            c.name: Normalizer(_bundle_stats(c) if c.spec.normalize == "bundle" else None)
            for c in self.components
            if c.spec.normalize is not None
        }
        self.model = ServedModel(spec.name, temperature=1.0)
        self.validate = Validate(limits.max_items_per_request, limits.max_text_chars, limits.policy_format)
        self.metrics = Metrics()
        self._component_metrics()
        models = [c.pipeline for c in self.components if isinstance(c, ServedModelComponent)]
        self.admission = Admission(
            limits.max_queued_sequences,
            self.metrics,
            throughput=lambda: None,
            healthy=lambda: all(model.admission.healthy() for model in models),
        )
        self._max_length = min((model.max_length for model in models), default=0)

    @property
    def max_length(self) -> int:
        return self._max_length

    async def scores(self, context: RequestContext, inputs: Inputs) -> Scores:
        context.items, context.sequences = inputs.items, len(inputs)
        if not inputs.sequences:
            return Scores(np.empty(0, dtype=np.float32))
        with self.admission.permit(len(inputs)):
            return await watched(context, self._scored(context, inputs))

    async def _scored(self, context: RequestContext, inputs: Inputs) -> Scores:
        # Policy text parsed for the rules and remote components: off the event loop, as the
        # models' own pipelines parse it on their tokenizer thread.
        items = await asyncio.to_thread(items_of, inputs)
        tasks = [asyncio.ensure_future(self._value(c, context, inputs, items)) for c in self.components]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed (or the request went away): the others' work is dropped
                task.cancel()
            raise
        raw = {c.name: values for c, (values, _) in zip(self.components, results, strict=True)}
        normalised = {name: self.normalizers[name](v) if name in self.normalizers else v for name, v in raw.items()}
        specs = {c.name: c.spec for c in self.components}
        labels = [item.label for item in items]
        rewards = combined(self.spec.combine, specs, raw, normalised, labels, self.spec.clip)
        details = dict(raw)
        for c, (_, fell_back) in zip(self.components, results, strict=True):
            if c.spec.fallback is not None:
                details[f"{c.name}_fallback"] = np.full(len(items), float(fell_back))
        return Scores(rewards.astype(np.float32), components=details)

    async def _value(
        self, component: Component, context: RequestContext, inputs: Inputs, items: list[Item]
    ) -> tuple[np.ndarray, bool]:
        """The component's values, and whether its fallback stood in for them."""
        started = time.perf_counter()
        name, spec = component.name, component.spec
        try:
            values = await asyncio.wait_for(component.values(context, inputs, items), spec.timeout)
        except (TimeoutError, ComponentError, EngineError) as error:
            # A served model's engine fault (500) fails like a remote one; what the request
            # itself got wrong (413, 422) and overload (429) are the request's answer as they are.
            timed_out = isinstance(error, TimeoutError | ComponentTimeoutError)
            self.component_failures.labels(name, "timeout" if timed_out else "error").inc()
            if spec.fallback is None:
                if isinstance(error, TimeoutError):
                    raise ComponentTimeoutError(f"component {name}: no value after {spec.timeout} s") from None
                raise
            reason = str(error) or "timeout"
            logger.warning("component %s failed (%s): its fallback %s stands in", name, reason, spec.fallback)
            self.component_fallbacks.labels(name).inc(len(items))
            return np.full(len(items), spec.fallback), True
        finally:
            self.component_seconds.labels(name).observe(time.perf_counter() - started)
        values = np.asarray(values, dtype=np.float64)
        self.component_values.labels(name).observe(float(values.mean()))
        return values, False

    def _component_metrics(self) -> None:
        registry = self.metrics.registry
        self.component_values = Summary(
            "rewardserve_component_value",
            "A composed reward's component: the mean of its values per request (sum / count: their mean).",
            ["component"],
            registry=registry,
        )
        self.component_seconds = Histogram(
            "rewardserve_component_duration_seconds",
            "A composed reward's component: its time per request.",
            ["component"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.component_failures = Counter(
            "rewardserve_component_failures",
            "A composed reward's component failed (error) or timed out (timeout) on a request.",
            ["component", "reason"],
            registry=registry,
        )
        self.component_fallbacks = Counter(
            "rewardserve_component_fallbacks",
            "Items whose component value is the spec's fallback, the component having failed.",
            ["component"],
            registry=registry,
        )

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        for component in self.components:
            await component.start()
        self.admission.warmed_up = True

    async def drain(self, timeout: float) -> None:
        await self.admission.drain(timeout, on_timeout=lambda: None)

    async def stop(self) -> None:
        self.admission.draining = True
        for component in self.components:
            await component.stop()


def component(name: str, spec: ComponentSpec, served: dict[str, ScoringPipeline]) -> Component:
    """The component `spec` declares; ValueError naming it where it cannot be served."""
    if isinstance(spec, ModelComponent):
        if spec.model not in served:
            raise ValueError(
                f"components.{name}.model: {spec.model!r} is not served here (served: {', '.join(served)}); "
                "serve it with --bundle NAME=PATH"
            )
        return ServedModelComponent(name, spec, served[spec.model])
    kinds: dict[type, type[Component]] = {
        RemoteComponent: RemoteReward,
        JudgeComponent: GenerationJudge,
        MathComponent: MathRule,
        FormatComponent: FormatRule,
        LengthComponent: LengthRule,
    }
    return kinds[type(spec)](name, spec)


def _bundle_stats(component: Component) -> tuple[float, float]:
    assert isinstance(component, ServedModelComponent)  # the spec checked
    stats = component.pipeline.model.reward_stats
    if stats is None or component.spec.objective is not None:
        raise ValueError(
            f"components.{component.name}.normalize: the bundle of {component.spec.model!r} has no reference "
            "statistics for this value; use 'running'"
        )
    return stats


def composed_models(spec_path: Path, models: ServedModels, limits: Limits) -> ServedModels:
    """`models` with the reward `spec_path` composes of them, served first: the default."""
    spec = load_spec(spec_path)
    pipelines = {name: pipeline for name, pipeline in models.by_name.items() if isinstance(pipeline, ScoringPipeline)}
    reward: Served = ComposedReward(spec, pipelines, limits)
    return ServedModels([reward, *models])
