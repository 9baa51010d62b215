"""Settings: one typed object, read from the environment (and `.env`) once at start."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_FORM = "redis+sentinel://[:password@]host[:port][,host[:port]...]/<master-name>[/<db>]"


@dataclass(frozen=True)
class SentinelURL:
    """RQ's Redis behind Sentinel: where the sentinels are, and which master and database."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None  # the master's (Redis AUTH), not the sentinels'


def parse_sentinel_url(url: str) -> SentinelURL:
    """`redis+sentinel://[:pw@]h1:26379,h2:26379/<master>/<db>`; ValueError says what is wrong."""
    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError(f"must have the form {SENTINEL_FORM}")
    rest = url[len(SENTINEL_SCHEME) :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"takes no query string or fragment: use the form {SENTINEL_FORM}")
    netloc, _, path = rest.partition("/")
    auth, _, hosts = netloc.rpartition("@")
    password = unquote(auth.partition(":")[2]) or None
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "26379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"lists a bad sentinel address {item!r}: give host:port pairs separated by "
                f"commas ({SENTINEL_FORM})"
            )
        sentinels.append((host, int(port)))
    parts = path.split("/") if path else []
    if not parts or not parts[0]:
        raise ValueError(f"names no master: add the name Sentinel monitors ({SENTINEL_FORM})")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"must end in /<master-name> or /<master-name>/<db> ({SENTINEL_FORM})")
    db = int(parts[1]) if len(parts) == 2 else 0
    return SentinelURL(tuple(sentinels), unquote(parts[0]), db, password)


def _server(url: str) -> tuple[str, int]:
    """The server a redis:// URL points at (loopback names as one), to tell two apart."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return ("127.0.0.1" if host in ("localhost", "::1") else host, parts.port or 6379)


class Settings(BaseSettings):
    """Everything the web process, the workers and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    #: REDIS_URL is any node of a Redis Cluster; the client discovers the others (§14).
    redis_cluster: bool = False
    #: RQ's own Redis (queues, workers, the /rq dashboard); "" = REDIS_URL (§14). A plain
    #: redis:// URL, or redis+sentinel://... for one made highly available by Sentinel.
    rq_redis_url: str = Field(default="", validate_default=True)
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
    #: A chat silent this long is forgotten; its touched day is kept modulo 100 (§10 memory).
    chat_ttl_days: int = Field(default=90, ge=1, le=98)
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

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_url(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url")
        if not value or url is None:
            return value
        if url.startswith("unix://"):
            raise ValueError(
                "a Redis Cluster is reached over TCP: REDIS_URL must be a redis:// or "
                "rediss:// address of one cluster node, not a unix:// socket"
            )
        path = urlsplit(url).path.strip("/")
        if path not in ("", "0") or "db=" in urlsplit(url).query:
            raise ValueError(
                f"a Redis Cluster has only database 0: REDIS_URL names database "
                f"{path or 'in its query'}; use redis://host:port/0"
            )
        return value

    @field_validator("rq_redis_url")
    @classmethod
    def _rq_redis_url(cls, value: str, info: ValidationInfo) -> str:
        cluster, url = info.data.get("redis_cluster", False), info.data.get("redis_url")
        if value == "":
            if cluster:
                raise ValueError(
                    "must be set with REDIS_CLUSTER=true: RQ cannot run on a Redis Cluster, "
                    "so its queues need a separate, non-cluster Redis (redis://host:port/0, "
                    f"or {SENTINEL_SCHEME}... for one behind Sentinel)"
                )
            return value
        if value.startswith(SENTINEL_SCHEME):
            parse_sentinel_url(value)
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must be a redis://, rediss://, unix:// or {SENTINEL_FORM} URL")
        if (
            cluster
            and url is not None
            and (
                value == url or (not value.startswith("unix://") and _server(value) == _server(url))
            )
        ):
            raise ValueError(
                "must not be REDIS_URL's server with REDIS_CLUSTER=true: RQ cannot run on a "
                "Redis Cluster (any database of it); give RQ a separate, non-cluster Redis"
            )
        return value

    @property
    def rq_sentinel(self) -> SentinelURL | None:
        """RQ_REDIS_URL parsed, when it names a Sentinel-managed Redis."""
        if self.rq_redis_url.startswith(SENTINEL_SCHEME):
            return parse_sentinel_url(self.rq_redis_url)
        return None

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
