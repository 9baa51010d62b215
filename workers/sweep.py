"""Forget chats silent for CHAT_TTL_DAYS (§10 retention): once a day per shard, by any
worker's janitor (the first to claim the day sweeps the shard)."""

from __future__ import annotations

import logging
import time

from redis import Redis

from app.redis_keys import RedisKeys, text
from app.settings import Settings
from workers.applier import Applier
from workers.chat_buckets import ChatBuckets

log = logging.getLogger("injixo.sweep")


def sweep_due(
    redis: Redis, settings: Settings, buckets: ChatBuckets | None = None, now: float | None = None
) -> dict[int, int]:
    """Sweep every shard not swept yet today (UTC); the chats forgotten per shard swept."""
    at = time.time() if now is None else now
    day = int(at // 86_400)
    keys = RedisKeys(settings.key_prefix)
    buckets = buckets or ChatBuckets(Applier(redis, settings))
    swept: dict[int, int] = {}
    for shard in range(settings.shards):
        # SET ... GET claims the day: of several janitors, one sweeps the shard.
        previous = redis.set(keys.sweep_day(shard), day, get=True)
        if previous is not None and int(text(previous)) >= day:
            continue
        swept[shard] = buckets.sweep(shard, at)
        if swept[shard]:
            log.info("forgot %d chats silent for %d days", swept[shard], settings.chat_ttl_days,
                     extra={"shard": shard})  # fmt: skip
    return swept
