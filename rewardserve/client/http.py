"""Python clients for a rewardserve server, sync and async, on httpx.

    with RewardClient("http://127.0.0.1:8000", api_key="...") as client:
        rewards = client.score(prompts, responses)            # list[float], in order
        rewards = client.score_chats(conversations)          # each ends with the assistant's reply
        results = client.compare(prompts, responses_a, responses_b)  # list[Comparison]
        best = client.rank(prompt, candidates).ranking[0]     # best-of-n
        detailed = client.score_detailed(items)               # + objectives, step rewards

Large inputs are sent in chunks of `chunk_size` items (the async client sends up to
`concurrency` chunks at once), so a 100,000-item scoring job is one call. A 429 or 503 answer,
a 502 or 504 from a router in front of replicas (the replica it chose died or timed out; the
retry goes to another), or a connection that failed, is retried with exponential backoff and
jitter, waiting at least what `Retry-After` asks; other errors raise RewardServerError with the server's error type
and message at once. One connection pool serves every call of a client.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # the types only: a client loads neither jinja2 nor tokenizers
    from rewardserve.bundle.chat import Conversation

# Scoring is idempotent, so a retry is always safe. 502 and 504: measured behind the vLLM Router
# with one of two replicas killed, every other request got 502 until its next health check.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def _worth_retrying(response: httpx.Response) -> bool:
    """A status in RETRY_STATUSES, or a 500 that is not rewardserve's own (whose body names its
    `error_type`): a proxy's, as Ray Serve answers when the replica holding the request died."""
    if response.status_code in RETRY_STATUSES:
        return True
    if response.status_code != 500:
        return False
    try:
        return "error_type" not in response.json()
    except ValueError:
        return True


class RewardServerError(Exception):
    """The server refused a request (or kept refusing it through every retry)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True)
class Comparison:
    reward_a: float
    reward_b: float
    p_a_better: float  # Bradley-Terry sigmoid((reward_a - reward_b) / T), with the bundle's T


@dataclass(frozen=True)
class Retry:
    """How failed attempts are retried: `attempts` in all, delays doubling from `backoff` up
    to `max_backoff` seconds with full jitter, never shorter than the server's Retry-After."""

    attempts: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        jittered = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        asked = float(retry_after) if retry_after and retry_after.strip().isdigit() else 0.0
        return max(jittered, asked)


@dataclass(frozen=True)
class Ranking:
    """K responses to one prompt, scored together."""

    rewards: list[float]  # in request order
    ranking: list[int]  # indices, best first
    p_best: list[float]  # Plackett-Luce first-choice probabilities softmax(rewards / T)
    p_better: list[list[float]] | None  # [i][j] = sigmoid((rewards[i] - rewards[j]) / T)


@dataclass(frozen=True)
class Step:
    reward: float
    span: tuple[int, int]  # [start, end) of the step's text in the response


@dataclass(frozen=True)
class DetailedScores:
    """`/score` with everything the model answers: multi-objective models' objectives (and a
    gated model's weights), process reward models' steps, a composed reward's components; None
    where the model has none."""

    rewards: list[float]
    objectives: dict[str, list[float]] | None = None
    objective_weights: dict[str, list[float]] | None = None
    steps: list[list[Step]] | None = None
    components: dict[str, list[float]] | None = None  # a composed reward's, raw, with NAME_fallback flags


def _detailed(answers: Sequence[dict[str, Any]]) -> DetailedScores:
    """The answers to consecutive chunks of one call, as one."""

    def joined(field: str) -> dict[str, list[float]] | None:
        if answers[0].get(field) is None:
            return None
        return {name: [v for answer in answers for v in answer[field][name]] for name in answers[0][field]}

    steps = None
    if answers[0].get("steps") is not None:
        steps = [[Step(s["reward"], tuple(s["span"])) for s in item] for a in answers for item in a["steps"]]
    rewards = [r for answer in answers for r in answer["rewards"]]
    return DetailedScores(rewards, joined("objectives"), joined("objective_weights"), steps, joined("components"))


def _score_body(items: Sequence[dict[str, Any]], truncate: bool, objectives: Sequence[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"items": list(items), "truncate": truncate}
    if objectives is not None:
        body["objectives"] = list(objectives)
    return body


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _text_items(prompts: Sequence[str], responses: Sequence[str]) -> list[dict[str, Any]]:
    return [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]


def chat_item(conversation: Conversation) -> dict[str, Any]:
    """The `/score` item of a conversation: its messages, with only the role and content the
    server takes (it refuses unknown fields)."""
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in conversation]}


def _chat_items(conversations: Sequence[Conversation]) -> list[dict[str, Any]]:
    return [chat_item(c) for c in conversations]


def _ranking_body(
    prompt: str | Conversation, responses: Sequence[str], pairwise: bool, truncate: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"responses": list(responses), "pairwise": pairwise, "truncate": truncate}
    if isinstance(prompt, str):
        body["prompt"] = prompt
    else:
        body["messages"] = chat_item(prompt)["messages"]
    return body


def _ranking(body: dict[str, Any]) -> Ranking:
    return Ranking(body["rewards"], body["ranking"], body["p_best"], body.get("p_better"))


def _compare_body(prompts: Sequence[str], a: Sequence[str], b: Sequence[str], truncate: bool) -> dict[str, Any]:
    items = [{"prompt": p, "a": x, "b": y} for p, x, y in zip(prompts, a, b, strict=True)]
    return {"items": items, "truncate": truncate}


def _comparisons(body: dict[str, Any]) -> list[Comparison]:
    return [Comparison(r["reward_a"], r["reward_b"], r["p_a_better"]) for r in body["results"]]


def _error(response: httpx.Response) -> RewardServerError:
    try:
        body = response.json()
        return RewardServerError(response.status_code, body.get("error_type", "unknown"), body.get("error", ""))
    except ValueError:
        return RewardServerError(response.status_code, "unknown", response.text[:200])


class _Base:
    _http_class: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        chunk_size: int = 256,
        retry: Retry | None = None,
        request_timeout: float | None = None,
        model: str | None = None,
    ) -> None:
        """`model`: the served model every request names, on a server of several (default: its first)."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.url = url.rstrip("/")
        self._named = {"model": model} if model else {}
        self.model: str | None = model  # the server's model name, once it has answered
        self.chunk_size = chunk_size
        self.retry = retry or Retry()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if request_timeout is not None:
            headers["X-Request-Timeout"] = str(request_timeout)
        self._http = self._http_class(base_url=self.url, headers=headers, timeout=timeout)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        body = response.json()
        self.model = body.get("model", self.model)
        return body

    def _wait_before_retry(self, attempt: int, failure: httpx.Response | httpx.TransportError) -> float:
        """Seconds to wait before attempt `attempt + 1`; raises what failed when it is not worth
        retrying (`_worth_retrying`) or the attempts are spent."""
        if isinstance(failure, httpx.Response) and not _worth_retrying(failure):
            raise _error(failure)
        if attempt + 1 >= self.retry.attempts:
            raise _error(failure) if isinstance(failure, httpx.Response) else failure
        retry_after = failure.headers.get("Retry-After") if isinstance(failure, httpx.Response) else None
        return self.retry.delay(attempt, retry_after)


class RewardClient(_Base):
    """Blocking client; thread-safe (httpx's pool is)."""

    _http_class = httpx.Client

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, truncate: bool = True) -> list[float]:
        """One reward per (prompt, response), in order."""
        return self.score_items(_text_items(prompts, responses), truncate=truncate)

    def score_chats(self, conversations: Sequence[Conversation], *, truncate: bool = True) -> list[float]:
        """One reward per conversation ({role, content} messages ending with the assistant's
        response), rendered by the server with its bundle's chat template."""
        return self.score_items(_chat_items(conversations), truncate=truncate)

    def score_items(self, items: Sequence[dict[str, Any]], *, truncate: bool = True) -> list[float]:
        """One reward per `/score` item (text or chat form), in order."""
        rewards: list[float] = []
        for part in _chunks(len(items), self.chunk_size):
            rewards += self._post("/score", {"items": items[part], "truncate": truncate})["rewards"]
        return rewards

    def score_detailed(
        self, items: Sequence[dict[str, Any]], *, objectives: Sequence[str] | None = None, truncate: bool = True
    ) -> DetailedScores:
        """Rewards of `/score` items, with the model's objectives (those named in `objectives`,
        default all) or step rewards. Items may send a process reward model's `steps`."""
        parts = _chunks(len(items), self.chunk_size)
        return _detailed([self._post("/score", _score_body(items[part], truncate, objectives)) for part in parts])

    def rank(
        self, prompt: str | Conversation, responses: Sequence[str], *, pairwise: bool = True, truncate: bool = True
    ) -> Ranking:
        """K responses to one prompt (text, or chat messages): rewards, best first, and choice probabilities."""
        return _ranking(self._post("/compare", _ranking_body(prompt, responses, pairwise, truncate)))

    def compare(
        self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str], *, truncate: bool = True
    ) -> list[Comparison]:
        """Both rewards and p(a better than b) for each (prompt, a, b), in order."""
        results: list[Comparison] = []
        for part in _chunks(len(prompts), self.chunk_size):
            body = _compare_body(prompts[part], responses_a[part], responses_b[part], truncate)
            results += _comparisons(self._post("/compare", body))
        return results

    def server_info(self) -> dict[str, Any]:
        """How the server runs (`/server_info`): its models, each with its precision and judge rule."""
        response = self._http.get("/server_info")
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in itertools.count():
            try:
                response = self._http.post(path, json={**body, **self._named})
            except httpx.TransportError as error:
                time.sleep(self._wait_before_retry(attempt, error))
                continue
            if response.status_code == 200:
                return self._answer(response)
            time.sleep(self._wait_before_retry(attempt, response))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRewardClient(_Base):
    """asyncio client; sends up to `concurrency` chunks of one call at once. Other options are
    RewardClient's."""

    _http_class = httpx.AsyncClient

    def __init__(self, url: str = "http://127.0.0.1:8000", *, concurrency: int = 4, **options: Any) -> None:
        super().__init__(url, **options)
        self._slots = asyncio.Semaphore(concurrency)

    async def score(self, prompts: Sequence[str], responses: Sequence[str], *, truncate: bool = True) -> list[float]:
        """One reward per (prompt, response), in order."""
        return await self.score_items(_text_items(prompts, responses), truncate=truncate)

    async def score_chats(self, conversations: Sequence[Conversation], *, truncate: bool = True) -> list[float]:
        """One reward per conversation ({role, content} messages ending with the assistant's
        response), rendered by the server with its bundle's chat template."""
        return await self.score_items(_chat_items(conversations), truncate=truncate)

    async def score_items(self, items: Sequence[dict[str, Any]], *, truncate: bool = True) -> list[float]:
        """One reward per `/score` item (text or chat form), in order."""
        bodies = [{"items": items[part], "truncate": truncate} for part in _chunks(len(items), self.chunk_size)]
        answers = await asyncio.gather(*(self._post("/score", body) for body in bodies))
        return [reward for answer in answers for reward in answer["rewards"]]

    async def score_detailed(
        self, items: Sequence[dict[str, Any]], *, objectives: Sequence[str] | None = None, truncate: bool = True
    ) -> DetailedScores:
        """RewardClient.score_detailed's answer."""
        parts = _chunks(len(items), self.chunk_size)
        bodies = [_score_body(items[part], truncate, objectives) for part in parts]
        return _detailed(await asyncio.gather(*(self._post("/score", body) for body in bodies)))

    async def rank(
        self, prompt: str | Conversation, responses: Sequence[str], *, pairwise: bool = True, truncate: bool = True
    ) -> Ranking:
        """K responses to one prompt (text, or chat messages): rewards, best first, and choice probabilities."""
        return _ranking(await self._post("/compare", _ranking_body(prompt, responses, pairwise, truncate)))

    async def compare(
        self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str], *, truncate: bool = True
    ) -> list[Comparison]:
        """Both rewards and p(a better than b) for each (prompt, a, b), in order."""
        parts = _chunks(len(prompts), self.chunk_size)
        bodies = [_compare_body(prompts[part], responses_a[part], responses_b[part], truncate) for part in parts]
        answers = await asyncio.gather(*(self._post("/compare", body) for body in bodies))
        return [result for answer in answers for result in _comparisons(answer)]

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._slots:
            for attempt in itertools.count():
                try:
                    response = await self._http.post(path, json={**body, **self._named})
                except httpx.TransportError as error:
                    await asyncio.sleep(self._wait_before_retry(attempt, error))
                    continue
                if response.status_code == 200:
                    return self._answer(response)
                await asyncio.sleep(self._wait_before_retry(attempt, response))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
