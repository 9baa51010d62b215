"""Settings: one typed object, read from the environment (and `.env`) once at start."""

from __future__ import annotations

import base64
import binascii
from functools import cached_property

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigError


class Settings(BaseSettings):
    """Everything the web process, the workers and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    #: RQ's own Redis (queues, workers, the /rq dashboard); "" = REDIS_URL (§14).
    rq_redis_url: str = ""
    #: A 202 also waits until this many replicas have the write (Redis WAIT), §14.
    redis_replica_acks: int = Field(default=0, ge=0, le=16)
    redis_replica_wait_ms: int = Field(default=1000, ge=10, le=60_000)
    admin_token: str = Field(min_length=16)
    reader_tokens: str = ""
    encryption_key: str
    freshchat_allow_insecure: bool = False
    port: int = Field(default=8000, ge=1, le=65535)
    #: This service's address as Freshchat reaches it (webhook URLs, §12); "" = as requested.
    public_url: str = Field(default="", pattern=r"^(https?://[^/?#\s]+)?$")
    web_concurrency: int = Field(default=1, ge=1, le=64)
    key_prefix: str = Field(default="ifc", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    rq_queue: str = Field(default="injixo", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=500, ge=1, le=10_000)
    future_tolerance_seconds: int = Field(default=24 * 3600, ge=0)
    rate_limit_events_per_second: float = Field(default=1000.0, ge=0)
    rate_limit_burst: int = Field(default=50_000, ge=1)

    shards: int = Field(default=8, ge=1, le=1024)
    chat_ttl_days: int = Field(default=90, ge=1)
    counts_retention_days: int = Field(default=400, ge=1)
    changes_retention_days: int = Field(default=35, ge=1, le=3650)

    drain_batch: int = Field(default=2000, ge=1, le=100_000)
    drain_lease_seconds: float = Field(default=20.0, gt=0)
    drain_time_budget_seconds: float = Field(default=10.0, gt=0)
    janitor_interval_seconds: float = Field(default=2.0, gt=0)
    stale_after_seconds: int = Field(default=24 * 3600, ge=60)
    stuck_after_seconds: int = Field(default=300, ge=1)
    deliveries_kept: int = Field(default=1000, ge=0, le=100_000)  # per integration; 0: off
    deliveries_days: int = Field(default=7, ge=1, le=90)
    group_list_every_seconds: float = Field(default=60.0, ge=0)  # §5: one listing a minute
    backfill_window_days: int = Field(default=7, ge=1, le=31)  # §13
    backfill_submit_every_seconds: float = Field(default=60.0, ge=0)  # §13, per integration
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("encryption_key")
    @classmethod
    def _fernet_key(cls, value: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(value.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                "must be 32 url-safe base64-encoded bytes (a Fernet key); create one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`"
            )
        return value

    @field_validator("redis_url", "rq_redis_url")
    @classmethod
    def _redis_url(cls, value: str, info: ValidationInfo) -> str:
        if value == "" and info.field_name == "rq_redis_url":
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @property
    def rq_url(self) -> str:
        """Where RQ keeps its queues and workers: RQ_REDIS_URL, else REDIS_URL."""
        return self.rq_redis_url or self.redis_url

    @cached_property
    def reader_token_list(self) -> tuple[str, ...]:
        """Reader tokens from the comma-separated setting, blanks dropped."""
        return tuple(t.strip() for t in self.reader_tokens.split(",") if t.strip())


def load_settings() -> Settings:
    """Build the settings, turning validation errors into one readable ConfigError."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            message = "must be set" if err["type"] == "missing" else err["msg"]
            problems.append(f"{name}: {message}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
