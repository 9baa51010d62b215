"""Group-name test support (§5): the stand-in's groups, a hand-moved clock, integrations,
and readers of the group map, backoff and call counters."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from app.integration import NewIntegration
from app.integrations import Integrations
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from workers.groups import GroupResolver

GOOD = "fc-good-key"
T0 = 1_795_000_000.0  # a fixed "now" for the resolver's clock
#: What the stand-in lists: 124 groups on three pages of 50, names with `|`, `:` and emoji.
GROUPS = {
    "g1": "Customer Support",
    "g2": "Billing | EU",
    "g3": "Sales: EMEA 🚀",
    "g4": "Tier | 2: Ops 🛠️",
} | {f"q{n:03d}": f"Queue {n}" for n in range(120)}
PAGES = [1, 2, 3]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def add_integration(
    settings: Settings, domain: str, key: str = GOOD, name: str = "Acme"
) -> tuple[str, int]:
    """Create an integration the way the admin API does (no verification): (id, shard)."""

    async def run() -> tuple[str, int]:
        client = AsyncRedis.from_url(settings.redis_url)
        try:
            new = NewIntegration(name=name, freshchat_domain=domain, freshchat_api_key=key)
            created = await Integrations(client, settings).create(new, None)
        finally:
            await client.aclose()
        return created.id, created.shard

    return asyncio.run(run())


def integrations_call(settings: Settings, method: str, *args: Any) -> Any:
    async def run() -> Any:
        client = AsyncRedis.from_url(settings.redis_url)
        try:
            return await getattr(Integrations(client, settings), method)(*args)
        finally:
            await client.aclose()

    return asyncio.run(run())


def group_map(r: redis.Redis, settings: Settings, shard: int, iid: str) -> dict[str, bytes]:
    """Group id -> name (a Freshchat entry's expiry stripped) or the negative marker."""
    raw = r.hgetall(RedisKeys(settings.key_prefix).groups(shard, iid))
    out = {}
    for k, v in raw.items():
        value = v.encode() if isinstance(v, str) else v
        out[text(k)] = value.split(b"\1")[-1] if value.startswith(b"\1") else value
    return out


def all_named(extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """The map after a complete listing of GROUPS (plus `extra` entries)."""
    return {gid: name.encode() for gid, name in GROUPS.items()} | (extra or {})


def backoff(r: redis.Redis, resolver: GroupResolver, shard: int, iid: str) -> dict[str, str]:
    raw = r.hgetall(resolver.redis_keys.group_backoff(shard, iid))
    return {text(k): text(v) for k, v in raw.items()}


def calls(r: redis.Redis, settings: Settings) -> dict[str, int]:
    """The workers' Freshchat requests by outcome (what /metrics shows)."""
    raw = r.hgetall(RedisKeys(settings.key_prefix).freshchat_calls())
    return {text(k): int(v) for k, v in raw.items()}
