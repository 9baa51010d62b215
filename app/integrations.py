"""Integrations and their injixo API keys, stored in Redis (§2)."""

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
from app.keys import Keys
from app.settings import Settings

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
PUBLIC_FIELDS = ("id", "name", "freshchat_domain", "created_at", "status")

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


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record without secrets or internals."""
    return {k: record[k] for k in PUBLIC_FIELDS if k in record}


@dataclass
class Integrations:
    """Admin operations on integrations and keys; every method takes the same Redis."""

    redis: Redis
    settings: Settings

    @property
    def keys(self) -> Keys:
        """Key names."""
        return Keys(self.settings.key_prefix)

    def decrypt_api_key(self, record: dict[str, Any]) -> str:
        """The Freshchat API key of a stored record, decrypted."""
        return decrypt_secret(self.settings, record["freshchat_api_key_enc"])

    async def get(self, integration_id: str) -> dict[str, Any]:
        """The full stored record (internal), or NotFound."""
        raw = await self.redis.hget(self.keys.integrations(), integration_id)
        if raw is None:
            raise NotFound(f"no integration {integration_id!r}")
        record: dict[str, Any] = orjson.loads(raw)
        return record

    async def all(self) -> list[dict[str, Any]]:
        """All records, oldest first."""
        raw = await self.redis.hvals(self.keys.integrations())
        records = [orjson.loads(r) for r in raw]
        return sorted(records, key=lambda r: (r["created_at"], r["id"]))

    async def create(
        self,
        name: str,
        domain: str,
        freshchat_api_key: str,
        verify: Verifier | None,
    ) -> dict[str, Any]:
        """Validate, optionally verify the Freshchat key, and store a new integration."""
        name = clean_name(name)
        domain = normalise_domain(domain, self.settings.freshchat_allow_insecure)
        api_key = freshchat_api_key.strip()
        if not api_key or len(api_key) > 4096:
            raise BadRequest("Freshchat API key is required")
        if await self.redis.hexists(self.keys.names(), _fold(name)):
            raise Conflict(f"an integration named {name!r} already exists")
        if verify is not None:
            await verify(domain, api_key)
        iid = new_integration_id()
        record = {
            "id": iid,
            "name": name,
            "freshchat_domain": domain,
            "created_at": int(time.time()),
            "status": "active",
            "shard": zlib.crc32(iid.encode()) % self.settings.shards,
            "freshchat_api_key_enc": encrypt_secret(self.settings, api_key),
        }
        if not await self.redis.hsetnx(self.keys.names(), _fold(name), iid):
            raise Conflict(f"an integration named {name!r} already exists")
        await self.redis.hset(self.keys.integrations(), iid, orjson.dumps(record))
        return record

    async def update(
        self, integration_id: str, changes: dict[str, Any], verify: Verifier | None
    ) -> dict[str, Any]:
        """Rename, change domain or Freshchat key; verification as on create."""
        record = await self.get(integration_id)
        if record["status"] == "deleted":
            raise Conflict("the integration is deleted")
        unknown = set(changes) - {"name", "freshchat_domain", "freshchat_api_key"}
        if unknown:
            raise BadRequest(f"cannot change {', '.join(sorted(unknown))}")
        new_name = clean_name(changes["name"]) if "name" in changes else record["name"]
        domain = record["freshchat_domain"]
        if "freshchat_domain" in changes:
            domain = normalise_domain(
                changes["freshchat_domain"], self.settings.freshchat_allow_insecure
            )
        api_key = changes.get("freshchat_api_key")
        if api_key is not None and not str(api_key).strip():
            raise BadRequest("Freshchat API key must not be empty")
        if verify is not None and (api_key is not None or "freshchat_domain" in changes):
            await verify(domain, str(api_key).strip() if api_key else self.decrypt_api_key(record))
        if _fold(new_name) != _fold(record["name"]):
            if not await self.redis.hsetnx(self.keys.names(), _fold(new_name), integration_id):
                raise Conflict(f"an integration named {new_name!r} already exists")
            await self.redis.hdel(self.keys.names(), _fold(record["name"]))
        record["name"] = new_name
        record["freshchat_domain"] = domain
        if api_key is not None:
            record["freshchat_api_key_enc"] = encrypt_secret(self.settings, str(api_key).strip())
        await self.redis.hset(self.keys.integrations(), integration_id, orjson.dumps(record))
        return record

    async def delete(self, integration_id: str) -> None:
        """Revoke every key and stop ingestion; counts stay readable."""
        record = await self.get(integration_id)
        for meta in await self.list_keys(integration_id):
            if meta["revoked_at"] is None:
                await self.revoke_key(integration_id, meta["key_id"])
        record["status"] = "deleted"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.names(), _fold(record["name"]))
            pipe.hset(self.keys.integrations(), integration_id, orjson.dumps(record))
            await pipe.execute()

    async def create_key(self, integration_id: str) -> dict[str, str]:
        """Generate an injixo API key; the secret is in the answer only."""
        record = await self.get(integration_id)
        if record["status"] == "deleted":
            raise Conflict("the integration is deleted")
        key = generate_key()
        meta = {
            "key_id": key.key_id,
            "prefix": key.prefix,
            "created_at": int(time.time()),
            "revoked_at": None,
            "hash": key.key_hash,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.api_key(key.key_hash), f"{integration_id}:{key.key_id}")
            pipe.hset(self.keys.key_meta(integration_id), key.key_id, orjson.dumps(meta))
            pipe.hset(
                self.keys.active_keys(record["shard"], integration_id), key.key_hash, key.key_id
            )
            await pipe.execute()
        return {"key_id": key.key_id, "api_key": key.secret, "prefix": key.prefix}

    async def list_keys(self, integration_id: str) -> list[dict[str, Any]]:
        """Key metadata (never the key), with last use."""
        await self.get(integration_id)
        metas = await self.redis.hgetall(self.keys.key_meta(integration_id))
        used = await self.redis.hgetall(self.keys.key_used(integration_id))
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
        record = await self.get(integration_id)
        raw = await self.redis.hget(self.keys.key_meta(integration_id), key_id)
        if raw is None:
            raise NotFound(f"no key {key_id!r} for integration {integration_id!r}")
        meta = orjson.loads(raw)
        if meta["revoked_at"] is None:
            meta["revoked_at"] = int(time.time())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.active_keys(record["shard"], integration_id), meta["hash"])
            pipe.hset(self.keys.key_meta(integration_id), key_id, orjson.dumps(meta))
            await pipe.execute()
