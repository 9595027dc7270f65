"""One typed record per request, from its first byte to its access-log line.

A transport makes it (the HTTP server's outermost middleware, `service/access_log.py`); the
pipeline's stages fill in what they learn (how many items and sequences, tokens, where the time
went, cache hits, an engine error's id); the transport then writes its timing headers, metrics
and access line from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


@dataclass(slots=True)
class Timings:
    """Where a scored request's time went, in seconds, as text-embeddings-inference reports it."""

    tokenization: float
    queue: float  # in the batcher but not in one of its own batches
    inference: float  # engine time of the batches that held its sequences
    cached: int  # sequences answered without running them: cached, or joined to an identical one

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("X-Tokenization-Time", milliseconds(self.tokenization)),
            ("X-Queue-Time", milliseconds(self.queue)),
            ("X-Inference-Time", milliseconds(self.inference)),
            ("X-Cached-Sequences", str(self.cached)),
        ]


@dataclass(slots=True)
class RequestContext:
    request_id: str
    arrived: float  # time.perf_counter() at the first byte
    deadline: float | None = None  # perf_counter time past which the request is answered 504
    # Completes when the client goes away (None: nobody to watch, e.g. the warm-up).
    disconnected: Callable[[], Awaitable[None]] | None = None
    model: str | None = None  # the served model that scores it, once picked
    monitored: bool = True  # whether its rewards count in the reward monitor (not the warm-up's)
    items: int | None = None
    sequences: int | None = None
    tokens: int | None = None  # after truncation
    timings: Timings | None = None  # set once its rewards are ready
    error_id: str | None = None  # an engine fault's, logged with its traceback
