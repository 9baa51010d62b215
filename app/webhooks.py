"""An integration's Freshchat webhook (§12): the pasted public key and the URL to paste back.

One webhook per integration. Its id is the last part of the URL: random (192 bits), kept
when the key is replaced (the URL in Freshchat stays right), new on request. The id is
also an entry of the integration's active-keys hash, so the ingest script refuses a
deleted webhook's requests atomically, as it refuses a revoked API key's.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from app.auth import hash_key
from app.errors import Conflict, NotFound
from app.integration import Integration
from app.public_keys import parse_public_key
from app.redis_keys import RedisKeys
from app.settings import Settings

WEBHOOK_PATH = "/v1/freshchat/webhooks/"
WEBHOOK_KEY_ID = "webhook"  # its entry in the active-keys hash and the last-used hash
ID_BYTES = 24


class WebhookIn(BaseModel):
    """`PUT /v1/integrations/{id}/webhook`."""

    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(description="the RSA public key from Freshchat's webhook settings")
    new_url: bool = Field(
        default=False, description="give the webhook a new id (the old URL stops at once)"
    )


class WebhookOut(BaseModel):
    """An integration's Freshchat webhook."""

    integration_id: str
    webhook_id: str
    url: str
    public_key: str
    fingerprint: str
    created_at: int
    updated_at: int
    last_request_at: int | None = None


@dataclass(frozen=True)
class Webhook:
    """The stored webhook of one integration."""

    webhook_id: str
    public_key: str
    fingerprint: str
    created_at: int
    updated_at: int

    def dump(self) -> bytes:
        """As stored in Redis."""
        return orjson.dumps(self.__dict__)

    @classmethod
    def load(cls, raw: bytes | str) -> Webhook:
        """From Redis."""
        return cls(**orjson.loads(raw))


def webhook_key_hash(webhook_id: str) -> str:
    """The webhook's entry in the integration's active-keys hash."""
    return hash_key(WEBHOOK_KEY_ID + ":" + webhook_id)


def webhook_url(base: str, webhook_id: str) -> str:
    """The URL to paste into Freshchat, on `PUBLIC_URL` or the address the admin used."""
    return base.rstrip("/") + WEBHOOK_PATH + webhook_id


@dataclass
class Webhooks:
    """Set, read and delete integrations' webhooks."""

    redis: Redis
    settings: Settings

    def __post_init__(self) -> None:
        self.redis_keys = RedisKeys(self.settings.key_prefix)

    async def find(self, integration_id: str) -> Webhook | None:
        """The integration's webhook, if it has one."""
        raw = await self.redis.hget(self.redis_keys.webhooks(), integration_id)
        return None if raw is None else Webhook.load(raw)

    async def get(self, integration_id: str) -> Webhook:
        """The integration's webhook, or NotFound."""
        found = await self.find(integration_id)
        if found is None:
            raise NotFound(f"integration {integration_id!r} has no Freshchat webhook")
        return found

    async def set(self, integration: Integration, given: WebhookIn) -> Webhook:
        """Store the pasted key (BadRequest if it is not an RSA public key)."""
        if not integration.active:
            raise Conflict("the integration is deleted")
        key = parse_public_key(given.public_key)
        old = await self.find(integration.id)
        now = int(time.time())
        if old is None or given.new_url:
            webhook_id = secrets.token_urlsafe(ID_BYTES)
            created = now if old is None else old.created_at
        else:
            webhook_id, created = old.webhook_id, old.created_at
        hook = Webhook(webhook_id, key.pem, key.fingerprint, created, now)
        keys = self.redis_keys
        active = keys.active_api_keys(integration.shard, integration.id)
        # Single-key writes in an order that is safe to stop anywhere (the keys are in
        # different slots on a cluster, §14): the old URL is revoked first; the record comes
        # next, so a retry finds it and finishes; the new URL is usable last (active set).
        if old is not None and old.webhook_id != webhook_id:
            await self.redis.hdel(active, webhook_key_hash(old.webhook_id))
            await self.redis.delete(keys.webhook_owner(old.webhook_id))
        await self.redis.hset(keys.webhooks(), integration.id, hook.dump())
        await self.redis.set(keys.webhook_owner(webhook_id), integration.id)
        await self.redis.hset(active, webhook_key_hash(webhook_id), WEBHOOK_KEY_ID)
        return hook

    async def delete(self, integration: Integration) -> bool:
        """Remove the webhook; its URL answers 404 from then on. False if there was none."""
        old = await self.find(integration.id)
        if old is None:
            return False
        keys = self.redis_keys
        # Unusable first, the record last: a retry after a failure halfway finds it again.
        await self.redis.hdel(
            keys.active_api_keys(integration.shard, integration.id),
            webhook_key_hash(old.webhook_id),
        )
        await self.redis.delete(keys.webhook_owner(old.webhook_id))
        await self.redis.hdel(keys.webhooks(), integration.id)
        return True

    async def view_if_set(self, integration_id: str, base: str) -> WebhookOut | None:
        """The API's view of the integration's webhook, None if it has none."""
        hook = await self.find(integration_id)
        return None if hook is None else await self.view(integration_id, hook, base)

    async def view(self, integration_id: str, hook: Webhook, base: str) -> WebhookOut:
        """The API's view, with the URL and when Freshchat last sent a request."""
        used = await self.redis.hget(self.redis_keys.api_key_used(integration_id), WEBHOOK_KEY_ID)
        return WebhookOut(
            integration_id=integration_id,
            webhook_id=hook.webhook_id,
            url=webhook_url(self.settings.public_url or base, hook.webhook_id),
            public_key=hook.public_key,
            fingerprint=hook.fingerprint,
            created_at=hook.created_at,
            updated_at=hook.updated_at,
            last_request_at=None if used is None else int(used),
        )
