"""Per-integration activity: last event, auth failures, and whether the app went quiet (§8)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
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


class Traffic(StrEnum):
    """Why an integration counts as healthy or stale: the one rule the API, metrics and page
    share, so the page's text can never disagree with the `stale` flag."""

    RECEIVING = "receiving"
    WAITING = "waiting"  # set up recently, no event yet
    DELETED = "deleted"
    ONLY_REJECTED = "only_rejected"  # no event ever, but auth failures: a wrong key
    SILENT_SINCE_SETUP = "silent_since_setup"  # no event ever, for longer than the limit
    REJECTED_LATELY = "rejected_lately"  # events stopped and auth failures followed
    SILENT = "silent"  # no event for longer than the limit
    SILENT_WITH_REJECTIONS = "silent_with_rejections"  # as SILENT, and auth failures on record

    @property
    def stale(self) -> bool:
        """The app stopped sending (or sends with a bad key): an operator should look."""
        return self not in (Traffic.RECEIVING, Traffic.WAITING, Traffic.DELETED)


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


def traffic(
    integration: Integration, activity: Activity | None, now: float, after_s: int
) -> Traffic:
    """Classify an integration's traffic: no event for `after_s`, or only auth failures
    lately, is stale; a deleted integration is never stale."""
    if not integration.active:
        return Traffic.DELETED
    last = activity.last_event_at if activity else None
    failures = activity.auth_failures if activity else 0
    if last is None and failures > 0:
        return Traffic.ONLY_REJECTED  # the app is installed and sending, with a bad key
    since = last if last is not None else integration.created_at
    silent = now - since > after_s
    failed = activity.last_auth_failure_at if activity else None
    rejected = failed is not None and failed > since and now - since > AUTH_ONLY_GRACE_S
    if not (silent or rejected):
        return Traffic.WAITING if last is None else Traffic.RECEIVING
    if last is None:
        return Traffic.SILENT_SINCE_SETUP
    if not silent:
        return Traffic.REJECTED_LATELY
    return Traffic.SILENT_WITH_REJECTIONS if failures else Traffic.SILENT
