"""Where offline jobs (batch scoring, evaluation) get rewards: a server, or the bundle in-process.

Both take `/score` items, `{"prompt", "response"}` or `{"messages"}`, so a job gives the same
rewards either way: the in-process scorer encodes them with the bundle's encoder (its chat
template) exactly as the server does.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rewardserve.bundle import BundleRuntime, choice
from rewardserve.bundle.chat import Conversation
from rewardserve.bundle.formatting import Text
from rewardserve.bundle.judge import pairwise
from rewardserve.client.http import Comparison, Ranking, RewardClient
from rewardserve.scoring.judged_pairs import every_ordered_pair
from rewardserve.scoring.offline import OfflineScoring
from rewardserve.scoring.schemas import Message
from rewardserve.scoring.validate import Inputs, candidate


@dataclass(frozen=True)
class ScorerFacts:
    """What a report says of the model that gave its rewards."""

    model: str
    precision: str | None  # the engine's; None where a server does not say (a composed reward)
    judge: str | None  # a judge's rule (yes_no, rating, pairwise); None for a classifier's head
    template: str  # how conversations became the model's text

    @property
    def pairwise(self) -> bool:
        """A pairwise judge gives no reward per response: it ranks responses through comparisons."""
        return self.judge == "pairwise"


class Scorer(Protocol):
    name: str  # the model, or the server's URL

    def score_items(self, items: Sequence[Mapping[str, Any]]) -> list[float]: ...

    def compare(
        self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> list[Comparison]: ...

    def rank(self, prompt: str | Conversation, responses: Sequence[str]) -> Ranking: ...

    def describe(self) -> ScorerFacts: ...

    def close(self) -> None: ...


class LocalScorer:
    """A bundle in this process, through the scoring core's offline path (`scoring/offline.py`):
    items read as the server reads them, length-sorted batches on every CPU it may use. With
    `prefix_reuse` (where the bundle can: a decoder's prefix graph at fp32 on the CPU, as the
    server decides), a prompt that several items share runs once, as the server's does: a
    /compare pair's two responses after one prompt."""

    def __init__(
        self, bundle: Path, *, threads: int | None = None, batch_size: int = 32, prefix_reuse: bool = True
    ) -> None:
        self.runtime = BundleRuntime(bundle, threads=threads, prefix_reuse=prefix_reuse)
        self.scoring = OfflineScoring(self.runtime, batch_size=batch_size)
        self.name = self.runtime.manifest.name

    def score_items(self, items: Sequence[Mapping[str, Any]]) -> list[float]:
        """Rewards of `/score` items (`{"prompt", "response"}`, `{"messages"}`, or a process
        reward model's `steps`); ValueError or a ServiceError naming the item that is refused."""
        return self.scoring.scores(self.scoring.read_items(items)).rewards.tolist()

    def compare(
        self, prompts: Sequence[Text], responses_a: Sequence[Text], responses_b: Sequence[Text]
    ) -> list[Comparison]:
        """As `/compare` answers: both rewards and p(a better than b) with the bundle's temperature;
        prompts and responses are text or, for chat-layout bundles, messages."""
        if self.scoring.model.outputs.pairwise:
            raise ValueError("a pairwise judge compares in a server's /compare, which reads each pair in both orders")
        n = len(prompts)
        rewards = self.scoring.scores(Inputs.of_texts([*prompts, *prompts], [*responses_a, *responses_b])).rewards
        p_a = choice.p_better(rewards[:n], rewards[n:], self.scoring.model.temperature)
        return [
            Comparison(*values) for values in zip(rewards[:n].tolist(), rewards[n:].tolist(), p_a.tolist(), strict=True)
        ]

    def rank(self, prompt: str | Conversation, responses: Sequence[str]) -> Ranking:
        """As a K-wise `/compare` answers; a pairwise judge's rewards are the Bradley-Terry scores
        of its verdicts on every ordered pair (`bundle/judge/pairwise.py`)."""
        check = self.scoring.validate
        if isinstance(prompt, str):
            check.text("prompt", prompt)
        else:
            prompt = check.messages("messages", [Message.model_validate(turn) for turn in prompt])
        candidates = [candidate(prompt, response, f"responses[{j}]") for j, response in enumerate(responses)]
        if not self.scoring.model.outputs.pairwise:
            rewards = self.scoring.scores(Inputs(candidates, 1)).rewards.astype(np.float64)
            t = self.scoring.model.temperature
            return Ranking(rewards.tolist(), choice.ranking(rewards).tolist(), choice.p_first(rewards, t).tolist(),
                           choice.p_better(rewards[:, None], rewards[None, :], t).tolist())  # fmt: skip
        verdicts = self.scoring.scores(Inputs(every_ordered_pair(candidates), 1)).rewards
        matrix = pairwise.preference_matrix(len(candidates), verdicts)
        rewards = pairwise.bradley_terry(matrix)
        return Ranking(
            rewards.tolist(), choice.ranking(rewards).tolist(), choice.p_first(rewards).tolist(), matrix.tolist()
        )

    def describe(self) -> ScorerFacts:
        manifest = self.runtime.manifest
        verdict = manifest.outputs.verdict
        template = hashlib.sha256(manifest.input_format.chat_template.encode()).hexdigest()[:12]
        return ScorerFacts(
            model=self.name,
            precision=self.runtime.choice.precision,
            judge=verdict.rule if verdict is not None else None,
            template=f"the bundle's own: {manifest.input_format.layout} layout, chat template sha256 {template}",
        )

    def close(self) -> None:
        pass


class RemoteScorer(RewardClient):
    """A rewardserve server (RewardClient: chunked, retried)."""

    @property
    def name(self) -> str:
        return self.model or self.url

    def describe(self) -> ScorerFacts:
        info = self.server_info()
        model = self.model or info["served_model_name"]
        facts = info.get("models", {}).get(model, {})
        return ScorerFacts(model, facts.get("precision"), facts.get("judge"), "the server's (messages sent as turns)")


def open_scorer(args: argparse.Namespace) -> Scorer:
    """The server at `--url`, else the `--bundle` in-process (`scorer_arguments`)."""
    if (args.url is None) == (args.bundle is None):
        raise ValueError("give a server --url or a --bundle to score in-process (one of them)")
    if args.url:
        return RemoteScorer(args.url, api_key=args.api_key)
    scorer = LocalScorer(Path(args.bundle))
    runtime = scorer.runtime
    print(f"prefix reuse: {'on' if runtime.prefix else 'off: ' + runtime.prefix_refused}", file=sys.stderr)
    return scorer


def scorer_arguments(parser: argparse.ArgumentParser, url: str, bundle: str) -> None:
    """Where `score` and `eval` get rewards: a server (--url, --api-key) or a bundle in-process."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help=url)
    where.add_argument("--bundle", help=bundle)
    parser.add_argument("--api-key", default=os.environ.get("REWARDSERVE_API_KEY"), help="default: REWARDSERVE_API_KEY")
