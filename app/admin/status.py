"""What the page says about an integration's traffic: `app.activity` decides, this words it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from app.activity import Activity, Traffic, read_activity, traffic
from app.integration import Integration
from app.redis_keys import RedisKeys

DEFAULT_STALE_AFTER_S = 24 * 3600
_KEY_HINT = "check the injixo API key in the app"


@dataclass(frozen=True)
class Health:
    """What the page says about an integration's traffic."""

    level: str  # ok | waiting | warning | deleted (also the badge's CSS class)
    text: str


def health_of(cause: Traffic, stale_after: int) -> Health:
    """The badge for a traffic classification."""
    hours = max(1, round(stale_after / 3600))
    match cause:
        case Traffic.DELETED:
            return Health("deleted", "Deleted")
        case Traffic.WAITING:
            return Health("waiting", "Waiting for the first event")
        case Traffic.RECEIVING:
            return Health("ok", "Receiving events")
        case Traffic.ONLY_REJECTED:
            return Health("warning", f"Only rejected requests so far: {_KEY_HINT}")
        case Traffic.SILENT_SINCE_SETUP:
            return Health("warning", f"No events received in the {hours} h since setup")
        case Traffic.REJECTED_LATELY:
            return Health("warning", f"Only rejected requests lately: {_KEY_HINT}")
        case Traffic.SILENT:
            return Health("warning", f"No events for more than {hours} h")
        case Traffic.SILENT_WITH_REJECTIONS:
            return Health(
                "warning", f"No events for more than {hours} h (and rejected requests since)"
            )


def health(
    record: Integration,
    last_event: int | None,
    failures: int,
    now: float,
    stale_after: int = DEFAULT_STALE_AFTER_S,
    last_failure_at: int | None = None,
) -> Health:
    """Flag an integration whose app stopped sending, or that sees only auth failures (§8)."""
    activity = Activity(last_event, failures, last_failure_at)
    return health_of(traffic(record, activity, now, stale_after), stale_after)


async def shard_backlog(redis: Redis, keys: RedisKeys, shards: set[int]) -> dict[int, int]:
    """Shard -> pending (not yet counted) events in its stream."""
    ordered = sorted(shards)
    if not ordered:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for shard in ordered:
            pipe.xlen(keys.stream(shard))
        lengths = await pipe.execute()
    return {shard: int(n) for shard, n in zip(ordered, lengths, strict=True)}


async def status_rows(
    redis: Redis, keys: RedisKeys, records: list[Integration], stale_after: int
) -> list[dict[str, Any]]:
    """One status row per integration: activity, its shard's backlog and the badge."""
    activity = await read_activity(redis, keys)
    backlog = await shard_backlog(redis, keys, {r.shard for r in records})
    now = time.time()
    out = []
    for record in records:
        act = activity.get(record.id) or Activity(None, 0, None)
        cause = traffic(record, act, now, stale_after)
        out.append(
            {
                "record": record,
                "last_event": act.last_event_at,
                "auth_failures": act.auth_failures,
                "pending_shard": backlog.get(record.shard, 0),
                "health": health_of(cause, stale_after),
            }
        )
    return out
