"""The scoring core for jobs that know every sequence up front (`rewardserve score` and `eval`
in-process, `client.scorers.LocalScorer`): the server's reading of an item (`items.py`,
validate.py), its retemplating and tokenizing, then the bundle's offline batching (length-sorted,
each shared prompt run once: `bundle/offline.py`) in place of the server's batcher. An item
gets the reward the server would answer for it, steps, policy text and objectives included.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from rewardserve.bundle import BundleRuntime
from rewardserve.bundle.offline import score_sequences
from rewardserve.bundle.outputs import Scores
from rewardserve.scoring.items import ScoreItem, score_input
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.retemplate import Retemplate, Unparsed
from rewardserve.scoring.tokenize import Tokenize
from rewardserve.scoring.validate import Inputs, Validate


class OfflineScoring:
    def __init__(
        self,
        runtime: BundleRuntime,
        *,
        batch_size: int = 32,
        policy_format: str = "auto",
        unparsed: Unparsed = "refuse",
        progress: str | None = None,
    ) -> None:
        """`policy_format`: of items' text read as a policy's (`score_items(..., policy_format=)`
        "auto"); `progress`: the label of a progress bar (rate and ETA) on stderr."""
        manifest = runtime.manifest
        self.runtime = runtime
        self.model = ServedModel(
            manifest.name, manifest.calibration_temperature, manifest.outputs, precision=runtime.choice.precision
        )
        # An offline job's size is its own: no item or text limits, the model's length still applies.
        self.validate = Validate(sys.maxsize, sys.maxsize, policy_format, outputs=manifest.outputs)
        self.retemplate = Retemplate(unparsed)
        self.tokenize = Tokenize(runtime.encoder, manifest.outputs.steps)
        self.batch_size = batch_size
        self.progress = progress

    def read_items(self, items: Sequence[Mapping[str, Any]], policy_format: str | None = None) -> Inputs:
        """`/score` items as the server reads them; ValueError naming the item and its field."""
        sequences = []
        for i, item in enumerate(items):
            try:
                parsed = ScoreItem.model_validate(item)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"items[{i}]{'.' + where if where else ''}: {first['msg']}") from None
            sequences.append(score_input(f"items[{i}]", parsed, policy_format, self.validate))
        return Inputs(sequences, len(items))

    def scores(self, inputs: Inputs) -> Scores:
        """Every output of `inputs`, in their order; a ServiceError (its message naming the item)
        for what the server would refuse."""
        inputs = self.validate.complete(inputs)
        sequences = self.tokenize(self.retemplate(inputs), inputs)
        return score_sequences(self.runtime, sequences, self.batch_size, self.progress, self.runtime.prefix)
