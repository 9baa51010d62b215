"""`POST /v1/freshchat/events`: authenticate, validate, store in one round trip (§3)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from app.auth import bearer_of, hash_key
from app.commit import GroupCommit, NotReplicated, Write
from app.deliveries import DeliveryLog, delivery_note
from app.errors import (
    AppError,
    BadRequest,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    storage_unavailable,
)
from app.events import parse_body, to_compacts
from app.integration import Integration
from app.jobs import enqueue_drain
from app.logs import LOGGED, REQUEST_LINES
from app.lua import Stored, StoreOutcome
from app.metrics import AUTH_FAILURES, count_accepted, count_rejected
from app.redis_client import STORAGE_ERRORS
from app.redis_keys import RedisKeys, text
from app.schemas import Accepted
from app.settings import Settings

log = logging.getLogger("injixo.ingest")
EVENTS_PATH = "/v1/freshchat/events"
NEGATIVE_TTL_S = 5.0
NEGATIVE_MAX = 10_000
LAST_USED_EVERY_S = 60.0
LAST_EVENT_EVERY_S = 10.0
UNAUTHORIZED = "missing, unknown or revoked API key"


_JSON = (b"content-type", b"application/json")
Handler = Callable[[Scope, Receive, dict[str, Any]], Awaitable[tuple[int, int]]]
Headers = tuple[tuple[bytes, bytes], ...]


@lru_cache(maxsize=4096)
def _accepted(accepted: int, ignored: int) -> tuple[Headers, bytes]:
    """The 202 headers and body; the same few pairs repeat, so each is rendered once."""
    body = Accepted(accepted=accepted, ignored=ignored).model_dump_json().encode()
    return (_JSON, (b"content-length", str(len(body)).encode())), body


def _error_parts(exc: AppError) -> tuple[int, Headers, bytes]:
    body = orjson.dumps(exc.body())
    extra = tuple((k.lower().encode(), v.encode()) for k, v in exc.headers().items())
    return exc.status, (_JSON, (b"content-length", str(len(body)).encode()), *extra), body


_EVENT_HEADERS = (b"authorization", b"content-type", b"content-length")


def header_values(scope: Scope, names: tuple[bytes, ...]) -> tuple[str, ...]:
    """The first value of each named header (lower-case names), "" when absent."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in names and name not in found:
            found[name] = value
    return tuple(found.get(name, b"").decode("latin-1") for name in names)


@dataclass(frozen=True)
class Credential:
    """What an injixo API key stands for."""

    integration_id: str
    key_id: str
    shard: int
    key_hash: str


@dataclass
class KeyDirectory:
    """Key hash -> credential; the mapping never changes, so positives are cached for good.

    Revocation is checked inside the ingest script on every request, so the cache
    cannot let a revoked key through on any web process.
    """

    redis: Redis
    redis_keys: RedisKeys
    known: dict[str, Credential] = field(default_factory=dict)
    unknown: dict[str, float] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)

    async def lookup(self, secret: str) -> Credential | None:
        """The credential for a presented key, or None if no such key was ever issued."""
        key_hash = hash_key(secret)
        cred = self.known.get(key_hash)
        if cred is not None:
            return cred
        now = time.monotonic()
        if self.unknown.get(key_hash, 0.0) > now:
            return None
        raw = await self.redis.get(self.redis_keys.api_key_owner(key_hash))
        if raw is None:
            if len(self.unknown) >= NEGATIVE_MAX:
                self.unknown.clear()
            self.unknown[key_hash] = now + NEGATIVE_TTL_S
            return None
        integration_id, _, key_id = text(raw).partition(":")
        shard = self.shards.get(integration_id)
        if shard is None:
            raw = await self.redis.hget(self.redis_keys.integrations(), integration_id)
            if raw is None:
                return None
            shard = Integration.load(raw).shard
            self.shards[integration_id] = shard
        cred = Credential(integration_id, key_id, shard, key_hash)
        self.known[key_hash] = cred
        return cred


@dataclass
class Ingest:
    """The ingestion endpoint and what it needs."""

    settings: Settings
    redis: Redis
    sync_redis: SyncRedis
    rq: SyncRedis  # RQ's Redis (RQ_REDIS_URL), where drains are enqueued; may be sync_redis
    redis_keys: RedisKeys
    directory: KeyDirectory
    commit: GroupCommit = field(init=False)
    deliveries: DeliveryLog = field(init=False)
    last_used: dict[str, float] = field(default_factory=dict)
    last_event: dict[str, float] = field(default_factory=dict)
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def build(
        cls, settings: Settings, redis: Redis, sync_redis: SyncRedis, rq: SyncRedis
    ) -> Ingest:
        """Wire the pieces for one web process (`rq`: RQ's sync connection)."""
        redis_keys = RedisKeys(settings.key_prefix)
        return cls(settings, redis, sync_redis, rq, redis_keys, KeyDirectory(redis, redis_keys))

    def __post_init__(self) -> None:
        self.commit = GroupCommit(self.redis, self.settings, self._on_schedule)
        self.deliveries = DeliveryLog(self.redis, self.settings)

    def _on_schedule(self, shard: int) -> None:
        self.spawn(asyncio.to_thread(self._schedule, shard))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint as a plain ASGI app: the hot path skips Starlette's request and
        response objects and its middleware stack, so it maps its own errors to responses
        and writes its own request line."""
        await self.serve(scope, receive, send, self._ingest)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, handler: Handler, logged_path: str = ""
    ) -> None:
        """Answer one request of an ingestion endpoint (`handler` gives accepted, ignored)."""
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            accepted, ignored = await handler(scope, receive, fields)
        except AppError as exc:
            count_rejected(exc.reason)
            fields["reason"] = exc.reason
            status, headers, body = _error_parts(exc)
        except STORAGE_ERRORS as exc:
            log.warning("redis unavailable: %s", type(exc).__name__)
            unavailable = storage_unavailable()
            count_rejected(unavailable.reason)
            fields["reason"] = unavailable.reason
            status, headers, body = _error_parts(unavailable)
        except Exception:
            # What the middleware stack would do: log it, answer 500, keep the process.
            log.exception("events request failed")
            count_rejected(AppError.reason)
            fields["reason"] = AppError.reason
            status, headers, body = _error_parts(AppError("internal server error"))
        else:
            count_accepted(accepted, ignored)
            fields["accepted"], fields["ignored"] = accepted, ignored
            status = 202
            headers, body = _accepted(accepted, ignored)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        scope[LOGGED] = True
        # (A path that holds a webhook id is logged as its template: the id is not logged.)
        logged = {**scope, "path": logged_path} if logged_path else scope
        REQUEST_LINES.request(logged, status, started, fields)

    async def _ingest(
        self, scope: Scope, receive: Receive, fields: dict[str, Any]
    ) -> tuple[int, int]:
        authorization, content_type, length = header_values(scope, _EVENT_HEADERS)
        secret = bearer_of(authorization)
        cred = await self.directory.lookup(secret) if secret else None  # RedisError: 503
        if cred is None:
            AUTH_FAILURES.labels("unknown").inc()
            raise Unauthorized(UNAUTHORIZED)
        fields["integration"] = cred.integration_id
        try:
            content_type = content_type.split(";")[0].strip().lower()
            if content_type != "application/json" and not content_type.endswith("+json"):
                raise UnsupportedMediaType("Content-Type must be application/json")
            body = await self.read_body(receive, length)
            events = parse_body(body, self.settings.max_batch_events)
            now_ms = int(time.time() * 1000)
            tolerance = self.settings.future_tolerance_seconds
            compacts, ignored = to_compacts(events, now_ms, tolerance)
        except AppError as exc:  # a reject of this integration's: its deliveries show it
            self.spawn(self.deliveries.reject(cred.shard, cred.integration_id, exc))
            raise
        note, lifecycle = delivery_note(events, ignored)
        if lifecycle:
            self.spawn(self.deliveries.lifecycle(cred.integration_id, lifecycle))
        encoded = [c.encode(cred.integration_id) for c in compacts]
        outcome = await self.store(cred, encoded, note)
        if outcome.stored is Stored.RATE_LIMITED:
            raise RateLimited(
                "rate limit exceeded for this integration", retry_after=outcome.retry_after
            )
        if outcome.stored is Stored.KEY_NOT_ACTIVE:
            AUTH_FAILURES.labels(cred.integration_id).inc()
            self.spawn(self.record_auth_failure(cred.integration_id))
            raise Unauthorized(UNAUTHORIZED)
        self.record_use(cred)
        return len(compacts), ignored

    async def read_body(self, receive: Receive, declared: str) -> bytes:
        """The whole body, or PayloadTooLarge as soon as it is over MAX_BODY_BYTES."""
        limit = self.settings.max_body_bytes
        too_large = f"body is over the limit of {limit} bytes"
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(too_large)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise BadRequest("the client disconnected before the body was complete")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(too_large)
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)

    async def store(self, cred: Credential, encoded: list[bytes], note: str) -> StoreOutcome:
        """Store one request's events and delivery note (group commit); 503 if Redis fails."""
        write = Write(cred.shard, cred.integration_id, cred.key_hash, encoded, note)
        try:
            return await self.commit.store(write)
        except NotReplicated as exc:
            log.warning("events not confirmed by replicas: %s", exc)
            raise Unavailable(
                "events not yet copied to the Redis replicas, retry later", retry_after=2
            ) from None
        except RedisError as exc:
            log.warning("event not stored: %s", type(exc).__name__)
            raise Unavailable("events could not be stored, retry later", retry_after=2) from None

    def _schedule(self, shard: int) -> None:
        try:
            enqueue_drain(self.rq, self.settings, shard)
        except STORAGE_ERRORS as exc:
            # The flag's lease expires and the workers' janitor schedules the drain.
            log.warning("could not enqueue drain of shard %s: %s", shard, type(exc).__name__)

    def record_use(self, cred: Credential) -> None:
        """Last event per integration (every 10 s) and last use per key (every minute),
        per process and off the request path: cheap, as §2 asks."""
        now = time.time()
        writes: list[tuple[str, str, int]] = []
        if now - self.last_event.get(cred.integration_id, 0.0) >= LAST_EVENT_EVERY_S:
            self.last_event[cred.integration_id] = now
            writes.append((self.redis_keys.last_event(), cred.integration_id, int(now)))
        if now - self.last_used.get(cred.key_hash, 0.0) >= LAST_USED_EVERY_S:
            self.last_used[cred.key_hash] = now
            writes.append(
                (self.redis_keys.api_key_used(cred.integration_id), cred.key_id, int(now))
            )
        if writes:
            self.spawn(self._write(writes))

    async def _write(self, writes: list[tuple[str, str, int]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, field_name, value in writes:
                    pipe.hset(key, field_name, value)
                await pipe.execute()
        except STORAGE_ERRORS:
            log.warning("could not record last use")

    async def record_auth_failure(self, integration_id: str) -> None:
        """Count a refused request of the integration (§8: the app sends with a bad key)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.redis_keys.auth_failures(), integration_id, 1)
                pipe.hset(self.redis_keys.auth_failure_at(), integration_id, int(time.time()))
                await pipe.execute()
        except STORAGE_ERRORS:
            log.warning("could not record an auth failure")

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background (kept referenced until it ends)."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
