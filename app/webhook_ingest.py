"""`POST /v1/freshchat/webhooks/{webhook_id}`: Freshchat's own signed webhooks (§12).

The signature is checked on the raw bytes before anything else is looked at; a missing or
wrong one gets the same 401 whatever was wrong, counts as an auth failure of the
integration and stores nothing. The rest is the events endpoint's way: one compact event
stored in the integration's shard stream by the same group commit and ingest script (which
also refuses a webhook deleted meanwhile, and logs the delivery), the same answers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from app.errors import (
    AppError,
    BadRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from app.ingest import Credential, Ingest, header_values
from app.integration import Integration
from app.lua import Stored
from app.metrics import AUTH_FAILURES
from app.public_keys import PublicKey, parse_public_key
from app.redis_keys import RedisKeys
from app.webhook_events import parse_webhook
from app.webhooks import WEBHOOK_KEY_ID, WEBHOOK_PATH, Webhook, webhook_key_hash

LOGGED_PATH = WEBHOOK_PATH + "{webhook_id}"
CACHE_S = 5.0  # a new key or a deleted webhook is seen by every web process within this
CACHE_MAX = 10_000
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
UNKNOWN = "no such webhook: copy the URL from the integration's page in injixo again"
BAD_SIGNATURE = "missing or invalid X-Freshchat-Signature"
#: X-Freshchat-Signature, Content-Type, Content-Length and X-Retry-Count.
_HEADERS = (b"x-freshchat-signature", b"content-type", b"content-length", b"x-retry-count")


@dataclass(frozen=True)
class Receiver:
    """What a webhook URL stands for: the integration's credential and its public key."""

    cred: Credential
    key: PublicKey


@dataclass
class WebhookDirectory:
    """Webhook id -> receiver, cached for a few seconds in each web process."""

    redis: Redis
    redis_keys: RedisKeys
    cached: dict[str, tuple[float, Receiver | None]] = field(default_factory=dict)
    keys: dict[str, PublicKey] = field(default_factory=dict)

    async def lookup(self, webhook_id: str) -> Receiver | None:
        """The receiver for a webhook id, or None if no integration has it now."""
        now = time.monotonic()
        hit = self.cached.get(webhook_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._read(webhook_id)
        if len(self.cached) >= CACHE_MAX:
            self.cached.clear()
        self.cached[webhook_id] = (now + CACHE_S, found)
        return found

    def forget(self, webhook_id: str) -> None:
        """Drop a cached receiver (the ingest script found its webhook gone)."""
        self.cached.pop(webhook_id, None)

    async def _read(self, webhook_id: str) -> Receiver | None:
        keys = self.redis_keys
        owner = await self.redis.get(keys.webhook_owner(webhook_id))
        if owner is None:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.integrations(), owner)
            pipe.hget(keys.webhooks(), owner)
            raw_integration, raw_hook = await pipe.execute()
        if raw_integration is None or raw_hook is None:
            return None
        integration, hook = Integration.load(raw_integration), Webhook.load(raw_hook)
        if hook.webhook_id != webhook_id or not integration.active:
            return None
        key = self.keys.get(hook.public_key)
        if key is None:
            if len(self.keys) >= CACHE_MAX:
                self.keys.clear()
            key = self.keys[hook.public_key] = parse_public_key(hook.public_key)
        cred = Credential(
            integration.id, WEBHOOK_KEY_ID, integration.shard, webhook_key_hash(webhook_id)
        )
        return Receiver(cred, key)


@dataclass
class WebhookIngest:
    """The webhook endpoint, sharing the events endpoint's Ingest (commit, log, answers)."""

    ingest: Ingest
    directory: WebhookDirectory

    @classmethod
    def build(cls, ingest: Ingest) -> WebhookIngest:
        """Wire it to the process's Ingest."""
        return cls(ingest, WebhookDirectory(ingest.redis, ingest.redis_keys))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (a plain ASGI app, like the events endpoint)."""
        await self.ingest.serve(scope, receive, send, self._receive, LOGGED_PATH)

    async def _receive(
        self, scope: Scope, receive: Receive, fields: dict[str, Any]
    ) -> tuple[int, int]:
        webhook_id = scope["path"][len(WEBHOOK_PATH) :]
        receiver = await self.directory.lookup(webhook_id) if _ID.fullmatch(webhook_id) else None
        if receiver is None:
            raise NotFound(UNKNOWN)
        cred, ingest = receiver.cred, self.ingest
        fields["integration"], fields["via"] = cred.integration_id, "webhook"
        signature, content_type, length, retry = header_values(scope, _HEADERS)
        if retry.isdigit():  # Freshchat's retry of an earlier delivery: counted once anyway
            fields["retry"] = int(retry[:6])
        try:
            body = await ingest.read_body(receive, length)
        except AppError as exc:  # too large (cannot be verified) or cut off: still logged
            ingest.spawn(
                ingest.deliveries.reject(cred.shard, cred.integration_id, exc, webhook=True)
            )
            raise
        if not receiver.key.verifies(signature, body):
            AUTH_FAILURES.labels(cred.integration_id).inc()
            ingest.spawn(ingest.record_auth_failure(cred.integration_id))
            refused = Unauthorized(BAD_SIGNATURE)
            ingest.spawn(
                ingest.deliveries.reject(cred.shard, cred.integration_id, refused, webhook=True)
            )
            raise refused
        try:
            media = content_type.split(";")[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                raise UnsupportedMediaType("Content-Type must be application/json")
            settings = ingest.settings
            now_ms = int(time.time() * 1000)
            parsed = parse_webhook(body, now_ms, settings.future_tolerance_seconds)
        except (UnsupportedMediaType, BadRequest) as exc:
            ingest.spawn(
                ingest.deliveries.reject(cred.shard, cred.integration_id, exc, webhook=True)
            )
            raise
        encoded = [] if parsed.compact is None else [parsed.compact.encode(cred.integration_id)]
        outcome = await ingest.store(cred, encoded, parsed.note)
        if outcome.stored is Stored.RATE_LIMITED:
            raise RateLimited(
                "rate limit exceeded for this integration", retry_after=outcome.retry_after
            )
        if outcome.stored is Stored.KEY_NOT_ACTIVE:  # deleted or given a new URL meanwhile
            self.directory.forget(webhook_id)
            raise NotFound(UNKNOWN)
        ingest.record_use(cred)
        return len(encoded), 1 - len(encoded)
