"""Server settings, from arguments or REWARDSERVE_* environment variables.

Every limit has a default sized for the default bundle on a small CPU box; docs/operate.md lists
them all. Keys are secrets: they never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rewardserve.bundle.engine_choice import RequestedPrecision
from rewardserve.bundle.policy_text import POLICY_FORMATS
from rewardserve.bundle.prefix import MIN_PROMPT_TOKENS
from rewardserve.scoring.shared_prompts import KEPT_SEQUENCES, KEPT_SHARE_OF_MEMORY


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REWARDSERVE_")

    bundle: Path = Field(
        description="Bundle directory written by `rewardserve export`: the default model, for requests that name none."
    )
    models: dict[str, Path] = Field(
        {},
        description='More models to serve beside `bundle`\'s, by name (as JSON: {"safety": "/bundles/safety"}), '
        "each with its own engine, batcher and queue; a request picks one by its `model` field.",
    )
    host: str = Field("127.0.0.1", description="Interface to bind; loopback unless asked otherwise.")
    port: int = Field(8000, ge=0, le=65535)
    reward_spec: Path | None = Field(
        None,
        description="A composed reward's spec (TOML, docs/compose.md): served first, as the default model, "
        "combining the served models, rules, remote servers and judges it names.",
    )
    served_model_name: str | None = Field(
        None,
        description="The model's name in answers and /v1/models (default: the bundle's). SGLang's gateway sends "
        "a request only to workers serving the `model` it names: give the name your trainer sends.",
    )

    precision: RequestedPrecision = Field(
        "auto",
        description="The bundle's precision to serve: auto (the fastest variant that passed the agreement gate and "
        "runs well on this machine: bf16 on CPUs with AMX or AVX-512-BF16, int8 on CPUs with VNNI, fp16 on CUDA, "
        "else fp32), or one by name (fp32, bf16, int8, int4, fp16), refused at start when the bundle or machine "
        "lacks it.",
    )

    # batching
    max_batch_size: int = Field(32, ge=1, description="Most sequences in one engine call.")
    max_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="Most padded tokens (longest sequence x count) in one engine call "
        "(default: 512 on CPU, 4096 for bf16 on CPU, 32768 on GPU).",
    )
    length_bucket: int | None = Field(
        None,
        ge=1,
        description="Pad each sequence to a multiple of this many tokens and batch only sequences of the same "
        "multiple, so that a reward never depends on its batch-mates (default: 16 for bf16 engines, whose kernels "
        "round differently at different padded lengths; 1, plain length grouping, elsewhere).",
    )
    cache_size: int = Field(
        65536, ge=0, description="Rewards of distinct formatted sequences kept for exact duplicates; 0 turns it off."
    )
    prefix_reuse: bool = Field(
        True,
        description="Score responses that share a prompt after its keys and values, the prompt run once (decoder "
        "bundles with a prefix graph; at bf16 and w8a8 every sequence with a long enough prompt, shared or not, so "
        "that a reward never depends on its path); 0 runs every sequence whole.",
    )
    prefix_min_tokens: int = Field(
        MIN_PROMPT_TOKENS,
        ge=1,
        description="Prompts shorter than this many tokens run whole with their responses (not worth it).",
    )
    prefix_cache_mb: int | None = Field(
        None,
        ge=1,
        description="Memory for prompts' keys and values kept for their later responses, in MiB (least recently "
        "used first out); also bounds the copies one engine call makes of them. Default: room for "
        f"{KEPT_SEQUENCES} sequences of the bundle's max length, at most 1/{round(1 / KEPT_SHARE_OF_MEMORY)} of the "
        "memory the process may use (the start log says).",
    )
    prefix_cache_seconds: float = Field(30.0, gt=0, description="Kept prompts unused this long are dropped.")
    threads: int | None = Field(
        None, ge=1, description="Engine threads (default: the CPUs this process may use, honouring a CPU quota)."
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower the CPU priority of tokenizer and engine threads is than the event loop's "
        "(Linux nice); keeps 429s fast when accepted work fills the CPUs. 0: equal.",
    )

    # limits on one request (413 beyond them)
    max_body_bytes: int = Field(16 * 2**20, ge=1, description="Largest request body, in bytes.")
    max_items_per_request: int = Field(1024, ge=1, description="Most items in one /score or /compare body.")
    max_text_chars: int = Field(
        100_000, ge=1, description="Longest prompt or response, in characters (longer inputs are truncated in tokens)."
    )
    max_steps_per_item: int = Field(256, ge=1, description="Most steps in one response (process reward models).")
    max_objectives_per_request: int = Field(
        64, ge=1, description="Most objectives one /score request may name in `objectives` (multi-objective models)."
    )

    # policy-formatted text (/get_reward queries, /score with "policy_format")
    policy_format: Literal[("auto", "raw", *POLICY_FORMATS)] = Field(  # type: ignore[valid-type]
        "auto",
        description="The chat format of /get_reward queries that do not name theirs: detected (auto), one of "
        "the formats, or raw (scored as they are, split after their prompts).",
    )
    unparsed_policy_text: Literal["refuse", "raw"] = Field(
        "refuse", description="Policy text that no format parses: a 422 naming the item (refuse), or scored as it is."
    )

    # backpressure
    max_queued_sequences: int = Field(
        4096,
        ge=1,
        description="Most sequences accepted and not yet answered; beyond it, requests get 429 at once. "
        "Size it as throughput x the wait clients accept.",
    )
    request_timeout: float | None = Field(
        None, gt=0, description="Deadline in seconds for requests without an X-Request-Timeout header (none: no limit)."
    )
    drain_timeout: float = Field(
        20.0, ge=0, description="On SIGTERM, seconds to finish accepted requests before failing the rest with 503."
    )

    # auth
    api_keys: SecretStr | None = Field(
        None, description="Comma-separated API keys; when set (or api_keys_file is), requests need a Bearer key."
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one per line ('#' comments); re-read when it changes."
    )
    protect_metrics: bool = Field(False, description="Require an API key for /metrics too.")

    @model_validator(mode="after")
    def _largest_request_fits_the_queue(self) -> Settings:
        # A /compare request queues two sequences per item: the queue must hold the largest one.
        if self.max_queued_sequences < 2 * self.max_items_per_request:
            raise ValueError(
                f"max_queued_sequences ({self.max_queued_sequences}) must hold the largest request: "
                f"at least 2 x max_items_per_request ({2 * self.max_items_per_request})"
            )
        return self
