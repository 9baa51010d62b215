"""Read a chat's stored state and assignment the way the apply script keeps them."""

from __future__ import annotations

import redis

from app.chat_state import ASSIGNMENT, bucket_count, bucket_of, state_of
from app.redis_keys import RedisKeys, text
from app.settings import Settings


def bucket_key(r: redis.Redis, settings: Settings, shard: int, iid: str, chat: str) -> str:
    """The chat bucket `chat` is in now."""
    keys = RedisKeys(settings.key_prefix)
    n = bucket_count(r.hget(keys.chat_buckets(shard), iid))
    return keys.chat_bucket(shard, iid, bucket_of(chat, n))


def chat_state(r: redis.Redis, settings: Settings, shard: int, iid: str, chat: str) -> str | None:
    """`<state><why digit>` of a counted chat (its touched day left out), or None."""
    raw = r.hget(bucket_key(r, settings, shard, iid, chat), chat)
    return None if raw is None else state_of(text(raw))


def assignment(r: redis.Redis, settings: Settings, shard: int, iid: str, chat: str) -> str:
    """`<time ms>:<group id>` of the chat's latest assignment (time 0: the lookup), or ""."""
    raw = r.hget(bucket_key(r, settings, shard, iid, chat), ASSIGNMENT + chat)
    return "" if raw is None else text(raw)[2:]


def set_assignment(
    r: redis.Redis, settings: Settings, shard: int, iid: str, chat: str, value: str
) -> None:
    """Store `<time ms>:<group id>` as the chat's assignment, touched today."""
    import time

    from app.chat_state import TOUCH_DAYS

    mark = f"{int(time.time()) // 86400 % TOUCH_DAYS:02d}"
    r.hset(bucket_key(r, settings, shard, iid, chat), ASSIGNMENT + chat, mark + value)
