"""The integration store: integrations and their injixo API keys in Redis (§2).

The admin keys live in different slots on a Redis Cluster (§14), so a change of several is
a sequence of single-key writes, not a transaction, ordered so that a failure halfway
(answered 503, and safe to retry) leaves nothing usable that should not be: a key becomes
usable last and is revoked first; a deleted integration is marked deleted before its name
is freed.
"""

from __future__ import annotations

import secrets
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from redis.asyncio import Redis

from app.auth import generate_key
from app.domains import normalise_domain
from app.errors import BadRequest, Conflict, NotFound
from app.integration import CHECKED, Integration, IntegrationChanges, NewIntegration, Status
from app.redis_keys import RedisKeys
from app.settings import Settings
from app.webhooks import Webhooks

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

Verifier = Callable[[str, str], Awaitable[None]]


def new_integration_id() -> str:
    """10 URL-safe characters (50 random bits)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(10))


def clean_name(value: str) -> str:
    """Trimmed name, 1-100 characters."""
    name = value.strip()
    if not 1 <= len(name) <= 100:
        raise BadRequest("name must be 1-100 characters (after trimming spaces)")
    return name


def _fold(name: str) -> str:
    return name.casefold()


def encrypt_secret(settings: Settings, secret: str) -> str:
    """Fernet token for a secret (the Freshchat API key at rest)."""
    return Fernet(settings.encryption_key.encode()).encrypt(secret.encode()).decode()


def decrypt_secret(settings: Settings, token: str) -> str:
    """The secret behind a Fernet token; BadRequest if ENCRYPTION_KEY changed."""
    try:
        return Fernet(settings.encryption_key.encode()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise BadRequest(
            "the stored Freshchat API key cannot be decrypted with the current ENCRYPTION_KEY"
        ) from None


@dataclass
class Integrations:
    """Admin operations on integrations and keys; every method takes the same Redis."""

    redis: Redis
    settings: Settings

    @property
    def redis_keys(self) -> RedisKeys:
        """Redis key names."""
        return RedisKeys(self.settings.key_prefix)

    def decrypt_api_key(self, integration: Integration) -> str:
        """The Freshchat API key of a stored integration, decrypted."""
        return decrypt_secret(self.settings, integration.freshchat_api_key_enc)

    async def get(self, integration_id: str) -> Integration:
        """The stored integration, or NotFound."""
        raw = await self.redis.hget(self.redis_keys.integrations(), integration_id)
        if raw is None:
            raise NotFound(f"no integration {integration_id!r}")
        return Integration.load(raw)

    async def all(self) -> list[Integration]:
        """All integrations, oldest first."""
        raw = await self.redis.hvals(self.redis_keys.integrations())
        return sorted(map(Integration.load, raw), key=lambda i: (i.created_at, i.id))

    async def _put(self, integration: Integration) -> None:
        await self.redis.hset(self.redis_keys.integrations(), integration.id, integration.dump())

    async def create(self, new: NewIntegration, verify: Verifier | None) -> Integration:
        """Validate, optionally verify the Freshchat key, and store a new integration."""
        name = clean_name(new.name)
        domain = normalise_domain(new.freshchat_domain, self.settings.freshchat_allow_insecure)
        api_key = new.freshchat_api_key.strip()
        if not api_key or len(api_key) > 4096:
            raise BadRequest("Freshchat API key is required")
        if await self.redis.hexists(self.redis_keys.name_index(), _fold(name)):
            raise Conflict(f"an integration named {name!r} already exists")
        if verify is not None:
            await verify(domain, api_key)
        iid = new_integration_id()
        integration = Integration(
            **new.model_dump(exclude=set(CHECKED)),
            id=iid,
            name=name,
            freshchat_domain=domain,
            created_at=int(time.time()),
            status=Status.ACTIVE,
            shard=zlib.crc32(iid.encode()) % self.settings.shards,
            freshchat_api_key_enc=encrypt_secret(self.settings, api_key),
        )
        if not await self.redis.hsetnx(self.redis_keys.name_index(), _fold(name), iid):
            raise Conflict(f"an integration named {name!r} already exists")
        await self._put(integration)
        return integration

    async def update(
        self, integration_id: str, changes: IntegrationChanges, verify: Verifier | None
    ) -> Integration:
        """Rename, change domain or Freshchat key; verification as on create."""
        if changes.empty():
            raise BadRequest(f"nothing to change: give {IntegrationChanges.names()}")
        old = await self.get(integration_id)
        if not old.active:
            raise Conflict("the integration is deleted")
        name = clean_name(changes.name) if changes.name is not None else old.name
        domain = old.freshchat_domain
        if changes.freshchat_domain is not None:
            domain = normalise_domain(
                changes.freshchat_domain, self.settings.freshchat_allow_insecure
            )
        api_key = changes.freshchat_api_key.strip() if changes.freshchat_api_key else None
        if changes.freshchat_api_key is not None and not api_key:
            raise BadRequest("Freshchat API key must not be empty")
        if verify is not None and (api_key is not None or changes.freshchat_domain is not None):
            await verify(domain, api_key or self.decrypt_api_key(old))
        if _fold(name) != _fold(old.name):
            if not await self.redis.hsetnx(self.redis_keys.name_index(), _fold(name), old.id):
                raise Conflict(f"an integration named {name!r} already exists")
            await self.redis.hdel(self.redis_keys.name_index(), _fold(old.name))
        updated = {**changes.plain(), "name": name, "freshchat_domain": domain}
        if api_key is not None:
            updated["freshchat_api_key_enc"] = encrypt_secret(self.settings, api_key)
        integration = old.model_copy(update=updated)
        await self._put(integration)
        return integration

    async def delete(self, integration_id: str) -> None:
        """Revoke every key and stop ingestion; counts stay readable."""
        integration = await self.get(integration_id)
        for meta in await self.list_keys(integration_id):
            if meta["revoked_at"] is None:
                await self.revoke_key(integration_id, meta["key_id"])
        await Webhooks(self.redis, self.settings).delete(integration)
        deleted = integration.model_copy(update={"status": Status.DELETED})
        await self._put(deleted)
        await self.redis.hdel(self.redis_keys.name_index(), _fold(integration.name))

    async def create_key(self, integration_id: str) -> dict[str, str]:
        """Generate an injixo API key; the secret is in the answer only."""
        integration = await self.get(integration_id)
        if not integration.active:
            raise Conflict("the integration is deleted")
        key = generate_key()
        meta = {
            "key_id": key.key_id,
            "prefix": key.prefix,
            "created_at": int(time.time()),
            "revoked_at": None,
            "hash": key.key_hash,
        }
        rk = self.redis_keys
        await self.redis.set(rk.api_key_owner(key.key_hash), f"{integration_id}:{key.key_id}")
        await self.redis.hset(rk.api_key_meta(integration_id), key.key_id, orjson.dumps(meta))
        # Usable from here on (the ingest script checks the active set): so written last.
        await self.redis.hset(
            rk.active_api_keys(integration.shard, integration_id), key.key_hash, key.key_id
        )
        return {"key_id": key.key_id, "api_key": key.secret, "prefix": key.prefix}

    async def list_keys(self, integration_id: str) -> list[dict[str, Any]]:
        """Key metadata (never the key), with last use."""
        await self.get(integration_id)
        metas = await self.redis.hgetall(self.redis_keys.api_key_meta(integration_id))
        used = await self.redis.hgetall(self.redis_keys.api_key_used(integration_id))
        out = []
        for key_id, raw in metas.items():
            meta = orjson.loads(raw)
            meta.pop("hash", None)
            last = used.get(key_id)
            meta["last_used_at"] = int(last) if last is not None else None
            out.append(meta)
        return sorted(out, key=lambda m: (m["created_at"], m["key_id"]))

    async def revoke_key(self, integration_id: str, key_id: str) -> None:
        """Take a key out of the active set at once; ingestion with it fails from now on."""
        integration = await self.get(integration_id)
        raw = await self.redis.hget(self.redis_keys.api_key_meta(integration_id), key_id)
        if raw is None:
            raise NotFound(f"no key {key_id!r} for integration {integration_id!r}")
        meta = orjson.loads(raw)
        if meta["revoked_at"] is None:
            meta["revoked_at"] = int(time.time())
        # Unusable first; the metadata (the listing's `revoked_at`) follows.
        await self.redis.hdel(
            self.redis_keys.active_api_keys(integration.shard, integration_id), meta["hash"]
        )
        await self.redis.hset(
            self.redis_keys.api_key_meta(integration_id), key_id, orjson.dumps(meta)
        )
