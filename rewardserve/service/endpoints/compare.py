"""`POST /compare`: Bradley-Terry preference probabilities. Pairs (`items`): both rewards and
the probability that `a` is preferred. One prompt with K `responses`: rewards, the ranking, and
Plackett-Luce and pairwise probabilities.

Probabilities use the bundle's calibration temperature T (`bundle/choice.py`):
p(a better than b) = sigmoid((r_a - r_b) / T), and for K responses the Plackett-Luce
first-choice probabilities softmax(r / T). Answers read the scalar reward alone.

A pairwise judge answers comparisons only, from its own verdicts (`bundle/judge/pairwise.py`):
each pair is read in both orders, and p_a_better is the judge's swap-averaged p(A); K responses
are read as every ordered pair, their rewards the Bradley-Terry scores of the judge's pairwise
log-odds, p_better the judge's own matrix and p_best softmax(rewards).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from rewardserve.bundle import choice
from rewardserve.bundle.judge import pairwise
from rewardserve.scoring.errors import TooManyItemsError
from rewardserve.scoring.judged_pairs import every_ordered_pair, read_together
from rewardserve.scoring.schemas import TRUNCATE, Body, Messages, ModelName, Text, one_form
from rewardserve.scoring.validate import Input, Inputs, Validate, candidate
from rewardserve.service.endpoints.base import Answer, Endpoint

# The K x K matrix of a K-wise /compare is serialized on the event loop: 256 responses take
# ~20 ms and 1.2 MiB of JSON, 1024 would take ~0.3 s (every other request waiting) and 19 MiB.
MAX_PAIRWISE_RESPONSES = 256


class CompareItem(Body):
    """`prompt` (text) or `messages` (chat form: the conversation so far), and two responses."""

    prompt: Text | None = None
    messages: Messages | None = Field(None, description="Chat form of the prompt; a and b are assistant replies.")
    a: Text = Field(description="First candidate response.")
    b: Text = Field(description="Second candidate response.")

    @model_validator(mode="after")
    def _one_form(self) -> CompareItem:
        one_form(self, texts=("prompt",))
        return self


class CompareRequest(Body):
    """Pairs as `items`, or K responses to one prompt (`prompt` or `messages`, and `responses`)."""

    model: ModelName = None
    items: list[CompareItem] | None = Field(None, min_length=1, description="Pairs: (prompt, a, b) each.")
    prompt: Text | None = Field(None, description="K-wise: the prompt every response answers.")
    messages: Messages | None = Field(None, description="K-wise, chat form of the prompt.")
    responses: list[Text] | None = Field(None, min_length=2, description="K-wise: the candidate responses.")
    pairwise: bool = Field(True, description="K-wise: include the K x K matrix p_better (false for a large K).")
    truncate: bool = TRUNCATE

    @model_validator(mode="after")
    def _one_form(self) -> CompareRequest:
        if self.items is not None:
            extra = [name for name in ("prompt", "messages", "responses") if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{extra[0]}: not with items (send pairs as items, or one prompt with responses)")
            return self
        if self.responses is None:
            raise ValueError("items: required (or one prompt or messages with responses)")
        one_form(self, texts=("prompt",))
        return self

    @property
    def ranked(self) -> bool:
        return self.items is None


class CompareResult(BaseModel):
    reward_a: float
    reward_b: float
    p_a_better: float = Field(
        description="Bradley-Terry probability sigmoid((reward_a - reward_b) / T); a pairwise judge's own p(a "
        "better), averaged over both orders (its rewards are then +-logit(p_a_better) / 2)."
    )


class CompareResponse(BaseModel):
    results: list[CompareResult]
    model: str


class RankingResponse(BaseModel):
    """K responses to one prompt, for best-of-n selection."""

    rewards: list[float] = Field(description="One reward per response, in request order.")
    ranking: list[int] = Field(description="Indices of the responses, best first (ties in request order).")
    p_best: list[float] = Field(description="Plackett-Luce first-choice probabilities softmax(rewards / T).")
    p_better: list[list[float]] | None = Field(
        None, description="p_better[i][j] = sigmoid((rewards[i] - rewards[j]) / T); omitted when pairwise is false."
    )
    model: str


class Compare(Endpoint[CompareRequest]):
    """Pairs (`items`): both rewards and the probability that `a` is preferred. One prompt
    with K `responses`: rewards, the ranking, and Plackett-Luce and pairwise probabilities."""

    paths = ("/compare",)
    body = CompareRequest
    response = CompareResponse | RankingResponse

    def inputs(self, body: CompareRequest, check: Validate) -> Inputs:
        if check.outputs.pairwise:
            return self._judged(body, check)
        if body.items is None:
            return Inputs(self._ranked(body, check), 1, body.truncate)
        return Inputs(self._pairs(body.items, check), len(body.items), body.truncate)

    @classmethod
    def _judged(cls, body: CompareRequest, check: Validate) -> Inputs:
        """A pairwise judge's texts: every item as (a, b), then every item as (b, a); K responses
        as their ordered pairs (pairwise.ordered_pairs)."""
        if body.items is not None:
            n = len(body.items)
            sides = cls._pairs(body.items, check)
            pairs = [(a, b, f"items[{i}]") for i, (a, b) in enumerate(zip(sides[:n], sides[n:], strict=True))]
            texts = [read_together(a, b, path) for a, b, path in pairs] + [
                read_together(b, a, path) for a, b, path in pairs
            ]
            return Inputs(texts, n, body.truncate)
        responses = cls._ranked(body, check)
        k = len(responses)
        if k * (k - 1) > check.max_items:
            raise TooManyItemsError(
                f"responses: a pairwise judge reads each ordered pair of the {k} responses, {k * (k - 1)} texts; at "
                f"most {check.max_items} per request (max_items_per_request)"
            )
        return Inputs(every_ordered_pair(responses), 1, body.truncate)

    @staticmethod
    def _pairs(items: list[CompareItem], check: Validate) -> list[Input]:
        """Every item's `a`, then every item's `b`."""
        check.count("items", len(items))
        prompts = []
        for i, item in enumerate(items):
            check.text(f"items[{i}].a", item.a)
            check.text(f"items[{i}].b", item.b)
            prompts.append(check.prompt(f"items[{i}].prompt", item.prompt, item.messages, f"items[{i}].messages"))
        return [
            candidate(prompt, getattr(item, side), f"items[{i}].{side}")
            for side in "ab"
            for i, (item, prompt) in enumerate(zip(items, prompts, strict=True))
        ]

    @staticmethod
    def _ranked(body: CompareRequest, check: Validate) -> list[Input]:
        """K-wise: each of `responses` after the one prompt."""
        assert body.responses is not None
        check.count("responses", len(body.responses))
        k = len(body.responses)
        if body.pairwise and k > MAX_PAIRWISE_RESPONSES:
            raise TooManyItemsError(
                f"responses: {k} responses would answer a {k} x {k} p_better matrix; at most "
                f'{MAX_PAIRWISE_RESPONSES} with "pairwise": true (send false for more)'
            )
        prompt = check.prompt("prompt", body.prompt, body.messages, "messages")
        for j, response in enumerate(body.responses):
            check.text(f"responses[{j}]", response)
        return [candidate(prompt, response, f"responses[{j}]") for j, response in enumerate(body.responses)]

    def respond(self, body: CompareRequest, answer: Answer) -> CompareResponse | RankingResponse:
        if answer.model.outputs.pairwise:
            return self._judgement(body, answer)
        rewards, t, name = answer.rewards, answer.model.temperature, answer.model.model_name
        if body.items is None:
            matrix = choice.p_better(rewards[:, None], rewards[None, :], t).tolist() if body.pairwise else None
            return RankingResponse(
                rewards=rewards.tolist(),
                ranking=choice.ranking(rewards).tolist(),
                p_best=choice.p_first(rewards, t).tolist(),
                p_better=matrix,
                model=name,
            )
        n = len(rewards) // 2  # every item's `a` came first, then every item's `b`
        reward_a, reward_b = rewards[:n], rewards[n:]
        p_a = choice.p_better(reward_a, reward_b, t)
        results = [
            CompareResult(reward_a=a, reward_b=b, p_a_better=p)
            for a, b, p in zip(reward_a.tolist(), reward_b.tolist(), p_a.tolist(), strict=True)
        ]
        return CompareResponse(results=results, model=name)

    @staticmethod
    def _judgement(body: CompareRequest, answer: Answer) -> CompareResponse | RankingResponse:
        """A pairwise judge's answer from the rewards of the texts `_judged` asked for."""
        name = answer.model.model_name
        if body.items is not None:
            n = len(body.items)
            p_a = pairwise.preference(answer.rewards[:n], answer.rewards[n:])
            half = 0.5 * pairwise.log_odds(p_a)
            results = [
                CompareResult(reward_a=s, reward_b=-s, p_a_better=p)
                for s, p in zip(half.tolist(), p_a.tolist(), strict=True)
            ]
            return CompareResponse(results=results, model=name)
        assert body.responses is not None
        matrix = pairwise.preference_matrix(len(body.responses), answer.rewards)
        scores = pairwise.bradley_terry(matrix)
        return RankingResponse(
            rewards=scores.tolist(),
            ranking=choice.ranking(scores).tolist(),
            p_best=choice.p_first(scores, 1.0).tolist(),
            p_better=matrix.tolist() if body.pairwise else None,
            model=name,
        )
