"""Per-integration activity: last event, auth failures, and whether the app went quiet (§8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from app.integration import Integration
from app.redis_keys import RedisKeys, text

AUTH_ONLY_GRACE_S = 600  # auth failures with no accepted event for this long: the key is wrong


@dataclass(frozen=True)
class Activity:
    """What the web tier has recorded about one integration's traffic."""

    last_event_at: int | None
    auth_failures: int
    last_auth_failure_at: int | None


def _ints(raw: dict[Any, Any]) -> dict[str, int]:
    out = {}
    for key, value in raw.items():
        try:
            out[text(key)] = int(value)
        except ValueError:
            continue
    return out


async def read_activity(redis: Redis, keys: RedisKeys) -> dict[str, Activity]:
    """Activity of every integration that has any."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.last_event())
        pipe.hgetall(keys.auth_failures())
        pipe.hgetall(keys.auth_failure_at())
        last, fails, fail_at = (_ints(x) for x in await pipe.execute())
    return {
        iid: Activity(last.get(iid), fails.get(iid, 0), fail_at.get(iid))
        for iid in set(last) | set(fails)
    }


def is_stale(integration: Integration, activity: Activity | None, now: float, after_s: int) -> bool:
    """An active integration with no event for `after_s`, or only auth failures lately."""
    if not integration.active:
        return False
    last = activity.last_event_at if activity else None
    if last is None and activity is not None and activity.auth_failures > 0:
        return True  # the app is installed and sending, but with a wrong or revoked key
    since = last if last is not None else integration.created_at
    if now - since > after_s:
        return True
    failed = activity.last_auth_failure_at if activity else None
    return failed is not None and failed > since and now - since > AUTH_ONLY_GRACE_S


def describe(
    integration: Integration, activity: Activity | None, now: float, after_s: int
) -> dict[str, Any]:
    """Status fields for the admin API and page."""
    return {
        "last_event_at": activity.last_event_at if activity else None,
        "auth_failures": activity.auth_failures if activity else 0,
        "stale": is_stale(integration, activity, now, after_s),
    }
