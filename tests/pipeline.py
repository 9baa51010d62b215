"""Test helpers that push events through the real storage path without HTTP."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis

from app.counts import Query, read_counts
from app.events import parse_body, to_compacts
from app.lua import SLOT_MS
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from workers.applier import Applier

FAR_FUTURE_MS = 2**42


def store(r: redis.Redis, settings: Settings, iid: str, shard: int, payloads: list[Any]) -> int:
    """Validate, compact and append payloads to the shard stream, as the endpoint does."""
    if not payloads:
        return 0
    events = parse_body(orjson.dumps(payloads), 10**6)
    compacts, _ = to_compacts(events, FAR_FUTURE_MS, 0)
    stream = RedisKeys(settings.key_prefix).stream(shard)
    with r.pipeline(transaction=False) as pipe:
        for c in compacts:
            pipe.xadd(stream, {"e": c.encode(iid)})
        pipe.execute()
    return len(compacts)


def apply_all(r: redis.Redis, settings: Settings, shard: int, batch: int = 500) -> int:
    """Apply every pending entry of a shard with the real script; returns how many applied."""
    applier = Applier(r, settings)
    total, start = 0, "-"
    while True:
        result = applier.apply(shard, start, count=batch)
        total += result.applied
        assert not result.dead_ids, "unexpected dead-lettered events"
        if not result.last_id:
            return total
        start = "(" + result.last_id


def counts(r: redis.Redis, settings: Settings, iid: str, shard: int) -> dict[tuple[str, str], int]:
    """All counts of one integration as {(interval start, queue): contacts}."""
    keys = RedisKeys(settings.key_prefix)
    out: dict[tuple[str, str], int] = defaultdict(int)
    names = {0: "Undefined_Queue"}
    for field, value in r.hgetall(keys.queue_names(shard, iid)).items():
        if text(field).startswith("#") and len(field) > 1:
            names[int(text(field)[1:])] = text(value)
    for key in r.scan_iter(match=keys.counts(shard, iid, 0)[:-1] + "*"):
        day = int(text(key).rsplit(":", 1)[1])
        for field, value in r.hgetall(key).items():
            sod, _, qid = text(field).partition(":")
            start = datetime.fromtimestamp((day * 96 + int(sod)) * SLOT_MS / 1000, UTC)
            out[(start.strftime("%Y-%m-%dT%H:%MZ"), names[int(qid)])] += int(value)
    return {k: v for k, v in out.items() if v}


def read_api_rows(settings: Settings, iid: str, shard: int, query: Query) -> list[dict[str, Any]]:
    """Rows as the read API computes them."""

    async def run() -> list[dict[str, Any]]:
        client = AsyncRedis.from_url(settings.redis_url)
        try:
            return await read_counts(client, RedisKeys(settings.key_prefix), shard, iid, query)
        finally:
            await client.aclose()

    return asyncio.run(run())


def all_stored_bytes(r: redis.Redis) -> bytes:
    """Every key and value in the database, readably (no compression), for secret scans."""
    parts: list[Any] = []
    for key in r.scan_iter(count=1000):
        parts.append(key)
        kind = r.type(key)
        if kind == b"string":
            parts.append(r.get(key) or b"")
        elif kind == b"hash":
            for f, v in r.hgetall(key).items():
                parts += [f, v]
        elif kind == b"list":
            parts += r.lrange(key, 0, -1)
        elif kind == b"set":
            parts += list(r.smembers(key))
        elif kind == b"zset":
            parts += list(r.zrange(key, 0, -1))
        elif kind == b"stream":
            entries: Any = r.xrange(key)
            for _, fields in entries:
                for f, v in fields.items():
                    parts += [f, v]
    return b"\n".join(parts)
