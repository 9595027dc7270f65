"""What a reward graph answers besides one scalar, and the one place its outputs are read.

Four kinds of reward model, told apart by the manifest's `outputs`:

- scalar (no `outputs` declared: every bundle before multi-output ones): the graph's `reward`,
  one float per sequence;
- multi-objective: `objectives`, one value per named objective (ArmoRM's 19, or a
  sequence-classification head with N labels), beside the scalar `reward` that the declared rule
  makes of them: a fixed weight vector, one named objective, or the model's own gating network
  (whose weights are the graph's `gating` output). The rule is applied inside the graph, at
  export, so every consumer of `reward` reads the same scalar;
- process reward model (PRM): `step_rewards`, the step class's probability at every position
  (a token classifier's class, or a causal LM's good step token against its bad one); the
  reward of step k is read at the k-th step token of the response (Qwen2.5-Math-PRM's
  `<extra_0>`, Math-Shepherd's `ки`), and the scalar is their min, mean, product or last;
- judge: `verdict`, the logits of a causal LM's verdict tokens at the answer position, and the
  rule that makes the reward of them (bundle/judge/: yes/no, rating), applied here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from rewardserve.bundle.judge import Verdict

REWARD = "reward"
OBJECTIVES = "objectives"
GATING = "gating"
STEP_REWARDS = "step_rewards"
VERDICT = "verdict"


class Objectives(BaseModel):
    """Named objectives, and the rule that makes the scalar reward of them."""

    names: list[str] = Field(min_length=2, description="One name per objective, in the graph's column order.")
    scalar: Literal["weights", "objective", "gating"] = Field(
        description="weights: reward = objectives . weights; objective: reward = the one named; gating: the "
        "model's own gating network weighs them (its weights are the graph's `gating` output)."
    )
    weights: list[float] | None = Field(None, description="scalar 'weights': one per objective.")
    objective: str | None = Field(None, description="scalar 'objective': the objective that is the reward.")

    @model_validator(mode="after")
    def _rule_is_complete(self) -> Objectives:
        if len(set(self.names)) != len(self.names):
            raise ValueError("names: each objective is named once")
        if self.scalar == "weights" and (self.weights is None or len(self.weights) != len(self.names)):
            raise ValueError(f"weights: one per objective ({len(self.names)}) for the 'weights' rule")
        if self.scalar == "objective" and self.objective not in self.names:
            raise ValueError(f"objective: {self.objective!r} is not one of the objectives")
        return self

    def weight_vector(self) -> list[float]:
        """The 'weights' and 'objective' rules as one weight per objective (the reward is the dot
        product); a gated model's weights are its gating network's, per sequence."""
        if self.scalar == "gating":
            raise ValueError("a gated model's weights are its gating network's output")
        return self.weights or [float(name == self.objective) for name in self.names]

    def describe(self) -> str:
        if self.scalar == "weights":
            return " + ".join(f"{w:g} * {n}" for n, w in zip(self.names, self.weights or [], strict=True))
        return self.objective if self.scalar == "objective" else "the model's gating network over the objectives"


StepScalar = Literal["min", "mean", "product", "last"]


class Steps(BaseModel):
    """Per-step rewards of a process reward model, read at a step token."""

    separator: str = Field(description="The text each step of a response ends with, e.g. '<extra_0>'.")
    token_id: int = Field(description="The separator's token id: step k's reward is read at its k-th occurrence.")
    label: int = Field(1, ge=0, description="The class whose probability is the step's reward.")
    activation: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="softmax over the classes (Qwen2.5-Math-PRM), or sigmoid of the label's logit."
    )
    scalar: StepScalar = Field("min", description="How the steps make the response's scalar reward.")
    class_tokens: list[str] | None = Field(
        None,
        description="A causal LM read as a PRM (Math-Shepherd): the tokens whose logits are the classes, the good "
        "one first (label 0), e.g. ['+', '-']; softmax over them.",
    )
    class_token_ids: list[int] | None = Field(None, description="Their token ids.")

    def describe(self) -> str:
        reward = f"step rewards at {self.separator!r}"
        if self.class_tokens is not None:
            tokens = ", ".join(
                f"{t!r} (id {i})" for t, i in zip(self.class_tokens, self.class_token_ids or [], strict=True)
            )
            reward += f": p({self.class_tokens[0]!r}) over the LM's tokens {tokens}"
        return f"{reward}; reward = their {self.scalar}"


class ModelOutputs(BaseModel):
    """The manifest's declaration of what the model answers; empty: one scalar reward."""

    objectives: Objectives | None = None
    steps: Steps | None = None
    verdict: Verdict | None = Field(None, description="A judge's verdict tokens and rule.")

    @model_validator(mode="after")
    def _one_kind(self) -> ModelOutputs:
        if sum(kind is not None for kind in (self.objectives, self.steps, self.verdict)) > 1:
            raise ValueError("a model has objectives, steps or a verdict, one of them")
        return self

    @property
    def gated(self) -> bool:
        return self.objectives is not None and self.objectives.scalar == "gating"

    @property
    def pairwise(self) -> bool:
        """A pairwise judge: each text it reads holds two responses, and it answers comparisons only."""
        return self.verdict is not None and self.verdict.rule == "pairwise"

    def graph_outputs(self) -> list[str]:
        """The graph's outputs, in the order export writes them."""
        if self.steps is not None:
            return [STEP_REWARDS]
        if self.verdict is not None:
            return [VERDICT]
        if self.objectives is not None:
            return [REWARD, OBJECTIVES, *([GATING] if self.gated else [])]
        return [REWARD]

    def describe(self) -> str:
        if self.objectives is not None:
            return f"{len(self.objectives.names)} objectives; reward = {self.objectives.describe()}"
        if self.steps is not None:
            return self.steps.describe()
        if self.verdict is not None:
            return self.verdict.describe()
        return "one scalar reward"


@dataclass(frozen=True)
class Extra:
    """One sequence's outputs besides its scalar reward."""

    objectives: np.ndarray | None = None  # (N,)
    weights: np.ndarray | None = None  # (N,) gating
    steps: np.ndarray | None = None  # (steps,)
    verdict: np.ndarray | None = None  # (K,) a judge's probability of each verdict token


@dataclass(frozen=True)
class Scores:
    """What a batch of sequences scored: rewards, and the declared extra outputs, row by row."""

    rewards: np.ndarray  # (n,) float32
    objectives: np.ndarray | None = None  # (n, N)
    weights: np.ndarray | None = None  # (n, N): the gating network's, when it has one
    steps: list[np.ndarray] | None = None  # per row, its step rewards in order
    verdict: np.ndarray | None = None  # (n, K): a judge's verdict probabilities, renormalised over them
    # A composed reward's value of each component per row (rewardserve/compose/), never batched.
    components: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    def extra(self, row: int) -> Extra | None:
        if self.objectives is None and self.steps is None and self.verdict is None:
            return None
        return Extra(
            None if self.objectives is None else self.objectives[row],
            None if self.weights is None else self.weights[row],
            None if self.steps is None else self.steps[row],
            None if self.verdict is None else self.verdict[row],
        )

    @classmethod
    def of_rows(cls, rewards: np.ndarray, extras: Sequence[Extra | None] | None) -> Scores:
        """Scores from per-row rewards and extras (all None, or none None)."""
        if not extras or extras[0] is None:
            return cls(rewards)
        first = extras[0]
        return cls(
            rewards,
            None if first.objectives is None else np.stack([e.objectives for e in extras]),
            None if first.weights is None else np.stack([e.weights for e in extras]),
            None if first.steps is None else [e.steps for e in extras],
            None if first.verdict is None else np.stack([e.verdict for e in extras]),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Scores]) -> Scores:
        rewards = np.concatenate([np.empty(0, dtype=np.float32), *(p.rewards for p in parts)])
        return cls.of_rows(rewards, [p.extra(i) for p in parts for i in range(len(p))])

    def take(self, rows: Sequence[int] | np.ndarray) -> Scores:
        return Scores.of_rows(self.rewards[rows], [self.extra(int(i)) for i in rows])

    def max_abs_diff(self, other: Scores) -> dict[str, float]:
        """|self - other| at its largest, output by output (both of the same model)."""
        diffs = {REWARD: float(np.abs(self.rewards - other.rewards).max(initial=0.0))}
        if self.objectives is not None and other.objectives is not None:
            diffs[OBJECTIVES] = float(np.abs(self.objectives - other.objectives).max(initial=0.0))
        if self.verdict is not None and other.verdict is not None:
            diffs[VERDICT] = float(np.abs(self.verdict - other.verdict).max(initial=0.0))
        if self.weights is not None and other.weights is not None:
            diffs[GATING] = float(np.abs(self.weights - other.weights).max(initial=0.0))
        if self.steps is not None and other.steps is not None:
            worst = 0.0
            for mine, theirs in zip(self.steps, other.steps, strict=True):
                if len(mine) != len(theirs):
                    return diffs | {STEP_REWARDS: float("inf")}
                worst = max(worst, float(np.abs(mine - theirs).max(initial=0.0)))
            diffs[STEP_REWARDS] = worst
        return diffs


def join_steps(steps: Sequence[str], separator: str) -> str:
    """A response written from its steps as PRMs read them: each step followed by the separator
    (Qwen2.5-Math-PRM's usage: `"<extra_0>".join(steps) + "<extra_0>"`)."""
    return "".join(step + separator for step in steps)


def step_spans(response: str, separator: str) -> list[tuple[int, int]]:
    """[start, end) of each step of `response` (a step is the text before each separator; text
    after the last one is not a step)."""
    spans, start = [], 0
    while (end := response.find(separator, start)) != -1:
        spans.append((start, end))
        start = end + len(separator)
    return spans


def step_positions(ids: np.ndarray, token_id: int, start: int = 0) -> np.ndarray:
    """Where the step tokens are in one row of ids, from column `start` (the response's first)."""
    return start + np.flatnonzero(ids[start:] == token_id)


def step_scalar(steps: np.ndarray, rule: StepScalar) -> float:
    """The response's reward from its step rewards (NaN without steps: never served, see tokenize)."""
    if not len(steps):
        return float("nan")
    match rule:
        case "min":
            return float(steps.min())
        case "mean":
            return float(steps.mean())
        case "product":
            return float(np.prod(steps, dtype=np.float64))
        case "last":
            return float(steps[-1])


def read_outputs(
    spec: ModelOutputs, outputs: Mapping[str, np.ndarray], input_ids: np.ndarray, response_starts: np.ndarray
) -> Scores:
    """Scores of a batch from the graph's (or PyTorch's) `outputs`, by name. `response_starts`:
    the column where each row's response begins in the padded `input_ids` (steps are read there
    on, so a separator the prompt quotes is not a step)."""
    if spec.steps is not None:
        probabilities = np.asarray(outputs[STEP_REWARDS], dtype=np.float32)
        steps = [
            probabilities[row, step_positions(input_ids[row], spec.steps.token_id, int(start))]
            for row, start in enumerate(response_starts)
        ]
        rewards = np.array([step_scalar(s, spec.steps.scalar) for s in steps], dtype=np.float32)
        return Scores(rewards, steps=steps)
    if spec.verdict is not None:
        rewards, probabilities = spec.verdict.read(np.asarray(outputs[VERDICT], dtype=np.float32))
        return Scores(rewards, verdict=probabilities)
    rewards = np.asarray(outputs[REWARD], dtype=np.float32).reshape(-1)
    if spec.objectives is None:
        return Scores(rewards)
    objectives = np.asarray(outputs[OBJECTIVES], dtype=np.float32)
    weights = np.asarray(outputs[GATING], dtype=np.float32) if spec.gated else None
    return Scores(rewards, objectives, weights)
