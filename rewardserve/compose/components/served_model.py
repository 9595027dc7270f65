"""A model this server serves, as a component: the request's sequences through that model's own
pipeline (its batcher and queue, shared with requests that name it directly), its reward or one
of its objectives."""

from __future__ import annotations

import numpy as np

from rewardserve.compose.components.base import Component, Item
from rewardserve.compose.spec import ModelComponent
from rewardserve.scoring.context import RequestContext
from rewardserve.scoring.pipeline import ScoringPipeline
from rewardserve.scoring.validate import Inputs


class ServedModelComponent(Component):
    spec: ModelComponent

    def __init__(self, name: str, spec: ModelComponent, pipeline: ScoringPipeline) -> None:
        super().__init__(name, spec)
        self.pipeline = pipeline
        outputs = pipeline.model.outputs
        if outputs.pairwise:
            raise ValueError(f"components.{name}: {spec.model!r} is a pairwise judge: it gives no reward per response")
        if spec.objective is not None:
            names = outputs.objectives.names if outputs.objectives is not None else []
            if spec.objective not in names:
                raise ValueError(
                    f"components.{name}.objective: {spec.objective!r} is not one of {spec.model!r}'s "
                    f"({', '.join(names) or 'it has none'})"
                )

    async def values(self, context: RequestContext, inputs: Inputs, items: list[Item]) -> np.ndarray:
        # Its own context: the pipeline fills in tokens and timings, and the deadline carries over.
        own = RequestContext(f"{context.request_id}/{self.name}", context.arrived, context.deadline)
        own.monitored = context.monitored
        scores = await self.pipeline.scores(own, self.pipeline.validate.complete(inputs))
        if self.spec.objective is None:
            return scores.rewards
        names = self.pipeline.model.outputs.objectives.names  # type: ignore[union-attr]
        return scores.objectives[:, names.index(self.spec.objective)]  # type: ignore[index]
