"""Server settings, from arguments or REWARDSERVE_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REWARDSERVE_")

    bundle: Path = Field(description="Bundle directory written by `rewardserve export`.")
    host: str = Field("127.0.0.1", description="Interface to bind; loopback unless asked otherwise.")
    port: int = Field(8000, ge=0, le=65535)
    max_batch_size: int = Field(32, ge=1, description="Most sequences in one engine call.")
    max_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="Most padded tokens (longest sequence x count) in one engine call "
        "(default: 2048 on CPU, 32768 on GPU).",
    )
    max_items_per_request: int = Field(1024, ge=1, description="Most items in one /score or /compare body.")
    cache_size: int = Field(
        65536, ge=0, description="Rewards of distinct formatted sequences kept for exact duplicates; 0 turns it off."
    )
    threads: int | None = Field(
        None, ge=1, description="Engine threads (default: the CPUs this process may use, honouring a CPU quota)."
    )
