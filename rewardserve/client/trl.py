"""A `reward_funcs` entry for TRL's GRPOTrainer (and its other online trainers):

    from rewardserve.client.trl import RewardFunction
    trainer = GRPOTrainer(model=..., reward_funcs=RewardFunction("http://reward:8000"), ...)

TRL calls it with the batch's `prompts` and `completions`: strings for plain-text datasets, or
lists of {role, content} messages for conversational ones, which the server renders with its
bundle's chat template. TRL itself is not imported here.

With a multi-objective reward model, the reward TRL gets may be one objective
(`objective="helpfulness"`) or a weighted sum of several (`objectives={"helpfulness": 0.7,
"safety": 0.3}`) instead of the model's own scalar; register several RewardFunctions (with
`reward_weights` in GRPOConfig) to have TRL log and weigh each objective apart.

A pairwise judge has no reward for one completion: `GroupComparisonReward` compares each GRPO
group of completions on `/compare` instead, and rewards each by its score in its group. (TRL's
own judge classes, `BasePairwiseJudge` and its online trainers' `judge`, are gone from TRL 1.x:
a judge reaches its trainers as a reward function.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rewardserve.client.http import Retry, RewardClient, RewardServerError

if TYPE_CHECKING:
    from rewardserve.bundle.chat import Conversation


def _turns(messages: Conversation) -> list[dict[str, str]]:
    # Only role and content reach the template; tool-call messages carry content None.
    return [{"role": m["role"], "content": m.get("content") or ""} for m in messages]


def score_item(prompt: str | Conversation, completion: str | Conversation) -> dict[str, Any]:
    """The `/score` item of one prompt and completion, text or conversational."""
    if isinstance(prompt, str) and isinstance(completion, str):
        return {"prompt": prompt, "response": completion}
    if isinstance(prompt, str) or isinstance(completion, str):
        raise TypeError("prompt and completion must both be text or both be message lists")
    return {"messages": _turns(prompt) + _turns(completion)}


class _ServerReward:
    """A TRL reward function backed by a rewardserve server. Picklable (the HTTP client is made
    on first use in each process), so it survives accelerate's and torchrun's worker processes.
    Extra keyword arguments (dataset columns, `trainer_state`, ...) are accepted, and ignored
    unless one is named as the labels' column.
    Rewards are logged under `name`."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        name: str,
        chunk_size: int,
        retry: Retry | None,
        request_timeout: float | None,
        model: str | None = None,
    ) -> None:
        self.__name__ = name  # TRL logs rewards/<__name__>/mean
        self._options: dict[str, Any] = dict(
            url=url, api_key=api_key, chunk_size=chunk_size, retry=retry, request_timeout=request_timeout, model=model
        )
        self._client: RewardClient | None = None

    @property
    def client(self) -> RewardClient:
        if self._client is None:
            self._client = RewardClient(**self._options)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RewardFunction(_ServerReward):
    """Scores GRPO completions on a rewardserve server: `(prompts, completions, **kwargs) -> list[float]`.

    `objective` or `objectives` (a weight per name) pick the reward among a multi-objective
    model's objectives; a name the model does not have fails the first call with ValueError.
    `label_column`: a dataset column (TRL passes each to reward functions by name) sent as each
    item's label, for a composed reward's rules (math-verify's reference answer: "solution").
    `model`: the served model to score with, on a server of several.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        name: str = "rewardserve",
        chunk_size: int = 256,
        retry: Retry | None = None,
        request_timeout: float | None = None,
        objective: str | None = None,
        objectives: dict[str, float] | None = None,
        label_column: str | None = None,
        model: str | None = None,
    ) -> None:
        if objective is not None and objectives is not None:
            raise ValueError("objective or objectives, not both")
        super().__init__(
            url,
            api_key=api_key,
            name=name,
            chunk_size=chunk_size,
            retry=retry,
            request_timeout=request_timeout,
            model=model,
        )
        self.weights = {objective: 1.0} if objective is not None else objectives
        self.label_column = label_column

    def __call__(
        self, prompts: Sequence[str | Conversation], completions: Sequence[str | Conversation], **columns: Any
    ) -> list[float]:
        items = [score_item(p, c) for p, c in zip(prompts, completions, strict=True)]
        if self.label_column is not None:
            if self.label_column not in columns:
                raise ValueError(f"label_column: the dataset has no column {self.label_column!r}")
            for item, label in zip(items, columns[self.label_column], strict=True):
                item["label"] = label
        if self.weights is None:
            return self.client.score_items(items)
        try:
            scored = self.client.score_detailed(items, objectives=list(self.weights))
        except RewardServerError as error:
            if error.error_type == "unknown_objective":
                raise ValueError(f"unknown objective: {error.message}") from error
            raise
        assert scored.objectives is not None
        columns = [[weight * value for value in scored.objectives[name]] for name, weight in self.weights.items()]
        return [sum(values) for values in zip(*columns, strict=True)]


class GroupComparisonReward(_ServerReward):
    """Rewards GRPO completions by comparing each group on `/compare`: what a pairwise judge
    (`export --judge pairwise`) answers, since it has no reward for one completion alone.

    TRL repeats each prompt `num_generations` times in a row; each run of equal prompts is one
    group, sent as one K-wise comparison, and each completion's reward is its score there (for a
    pairwise judge, the Bradley-Terry score of its preferences over every ordered pair in the
    group: they sum to zero, as GRPO's group-relative advantages would make them). A group of
    one has nothing to compare with and gets 0. A conversational completion's text is its last
    turn's. With several processes, a group split between them is compared in its parts.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        name: str = "rewardserve",
        retry: Retry | None = None,
        request_timeout: float | None = None,
    ) -> None:
        super().__init__(url, api_key=api_key, name=name, chunk_size=256, retry=retry, request_timeout=request_timeout)

    def __call__(
        self, prompts: Sequence[str | Conversation], completions: Sequence[str | Conversation], **_: Any
    ) -> list[float]:
        rewards: list[float] = []
        for prompt, group in _groups(prompts, completions):
            if len(group) == 1:
                rewards.append(0.0)
                continue
            prompt = prompt if isinstance(prompt, str) else _turns(prompt)
            responses = [c if isinstance(c, str) else (c[-1].get("content") or "") for c in group]
            rewards += self.client.rank(prompt, responses, pairwise=False).rewards
        return rewards


def _groups(
    prompts: Sequence[str | Conversation], completions: Sequence[str | Conversation]
) -> list[tuple[str | Conversation, list[str | Conversation]]]:
    """(prompt, its completions) for each run of equal prompts, in order."""
    groups: list[tuple[str | Conversation, list[str | Conversation]]] = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if groups and groups[-1][0] == prompt:
            groups[-1][1].append(completion)
        else:
            groups.append((prompt, [completion]))
    return groups
