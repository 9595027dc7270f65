"""Prometheus metrics, one registry per app so that several apps can live in one process.

Where the time goes: tokenization and end-to-end per request, queue per sequence, inference
per engine call. What the engine computes: sequences and padded tokens per call, and how many
of those tokens were padding (`padding_tokens_total / batch_tokens_sum` is the padding share).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = tuple(2**i for i in range(4, 18))
RATIO_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests(self.registry)
        self._engine_calls(self.registry)
        self._queue(self.registry)
        self._shared_prompts(self.registry)

    def _requests(self, registry: CollectorRegistry) -> None:
        """What clients asked, and how long it took."""
        by_endpoint = ["endpoint", "status"]
        self.requests = Counter(
            "rewardserve_requests", "HTTP requests by endpoint and status code.", by_endpoint, registry=registry
        )
        self.request_sequences = Counter(
            "rewardserve_sequences",
            "Sequences asked for (items, twice for /compare) by endpoint and status code.",
            by_endpoint,
            registry=registry,
        )
        self.request_seconds = Histogram(
            "rewardserve_request_duration_seconds",
            "End-to-end request latency, from the first byte in to the response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokenization_seconds = Histogram(
            "rewardserve_tokenization_duration_seconds",
            "Tokenizing one request's texts.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "rewardserve_queue_duration_seconds",
            "Per sequence: from queued to its engine call starting.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "rewardserve_inference_duration_seconds",
            "Engine time per batch.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def _engine_calls(self, registry: CollectorRegistry) -> None:
        """What the engine computed, and how long it took."""
        self.batch_size = Histogram(
            "rewardserve_batch_size", "Sequences per engine call.", buckets=BATCH_BUCKETS, registry=registry
        )
        self.batch_tokens = Histogram(
            "rewardserve_batch_tokens",
            "Padded tokens (longest sequence x count) per engine call.",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.batch_padding_ratio = Histogram(
            "rewardserve_batch_padding_ratio",
            "Share of an engine call's tokens that are padding.",
            buckets=RATIO_BUCKETS,
            registry=registry,
        )
        self.padding_tokens = Counter(
            "rewardserve_padding_tokens", "Padding tokens computed by the engine.", registry=registry
        )

    def _queue(self, registry: CollectorRegistry) -> None:
        """The queue, the duplicate cache and the engine's health."""
        self.queue_depth = Gauge("rewardserve_queue_depth", "Sequences waiting for the engine.", registry=registry)
        self.dropped_sequences = Counter(
            "rewardserve_dropped_sequences",
            "Queued sequences dropped unscored because their client went away or their deadline passed.",
            registry=registry,
        )
        self.cache_hits = Counter(
            "rewardserve_cache_hits",
            "Sequences answered without running them: from the cache, or joined to an identical queued one.",
            registry=registry,
        )
        self.cache_misses = Counter("rewardserve_cache_misses", "Sequences the cache did not hold.", registry=registry)
        self.in_flight_sequences = Gauge(
            "rewardserve_in_flight_sequences",
            "Sequences accepted and not yet answered (tokenizing, queued or running); bounded by max_queued_sequences.",
            registry=registry,
        )
        self.queue_limit = Gauge(
            "rewardserve_queue_limit_sequences",
            "max_queued_sequences: in-flight sequences past which requests get 429 (for saturation alerts).",
            registry=registry,
        )
        self.engine_failures = Counter(
            "rewardserve_engine_failures", "Engine calls that failed (their requests got 500).", registry=registry
        )
        self.engine_restarts = Counter(
            "rewardserve_engine_restarts",
            "Engine sessions (ONNX Runtime or OpenVINO) reopened after a failure left the old one broken.",
            registry=registry,
        )
        self.engine_precision = Gauge(
            "rewardserve_engine_precision",
            "1 for the precision the engine runs at (chosen at start for this machine), by precision and device.",
            ["precision", "device"],
            registry=registry,
        )

    def _shared_prompts(self, registry: CollectorRegistry) -> None:
        """Prompts run once for several responses (decoder bundles with prefix reuse)."""
        self.prefix_reuse = Gauge(
            "rewardserve_prefix_reuse",
            "1 when responses are scored after their prompt's keys and values (PREFIX_REUSE on and the bundle can), "
            "else 0.",
            registry=registry,
        )
        self.prefix_hits = Counter(
            "rewardserve_prefix_hits",
            "Sequences scored after a prompt's keys and values computed for another sequence (in the same engine "
            "call, or kept from an earlier one).",
            registry=registry,
        )
        self.prefix_tokens_saved = Counter(
            "rewardserve_prefix_tokens_saved",
            "Prompt tokens not run again thanks to prefix hits.",
            registry=registry,
        )
        self.prefix_prompts = Counter(
            "rewardserve_prefix_prompts", "Prompts run for their keys and values.", registry=registry
        )
        self.prefix_prompt_tokens = Counter(
            "rewardserve_prefix_prompt_tokens",
            "Tokens of the prompts run for their keys and values (the batch token metrics of an engine call after a "
            "shared prompt count its responses' tokens).",
            registry=registry,
        )
        self.prefix_whole = Counter(
            "rewardserve_prefix_whole_sequences",
            "Sequences run whole while prefix reuse is on, by reason: short_prompt (under PREFIX_MIN_TOKENS), "
            "merged_at_join (the tokenizer merged a token across the prompt-response join), no_prompt_or_response.",
            ["reason"],
            registry=registry,
        )
        self.prefix_cache_bytes = Gauge(
            "rewardserve_prefix_cache_bytes", "Memory of the prompts' keys and values kept.", registry=registry
        )
        self.prefix_cache_prompts = Gauge(
            "rewardserve_prefix_cache_prompts", "Prompts whose keys and values are kept.", registry=registry
        )
