"""What the page says about an integration's state: `app.state` decides, this words it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from app.activity import Activity, Traffic, traffic
from app.integration import Integration
from app.redis_keys import RedisKeys
from app.settings import Settings
from app.state import WORDS, IntegrationState, State, read_states

DEFAULT_STALE_AFTER_S = 24 * 3600
_LEVELS = {
    State.RECEIVING: "ok",
    State.WAITING_FOR_FIRST_EVENT: "waiting",
    State.DELETED: "deleted",
}


@dataclass(frozen=True)
class Health:
    """The badge: level (ok | waiting | warning | deleted, also its CSS class) and words."""

    level: str
    text: str


def badge(state: IntegrationState) -> Health:
    """The badge for an integration's state."""
    return Health(_LEVELS.get(state.state, "warning"), state.reason)


def health_of(cause: Traffic, stale_after: int) -> Health:
    """The badge for a traffic classification alone (no backlog, no app lifecycle)."""
    hours = max(1, round(stale_after / 3600))
    level = {Traffic.RECEIVING: "ok", Traffic.WAITING: "waiting", Traffic.DELETED: "deleted"}
    return Health(level.get(cause, "warning"), WORDS[cause][0].format(hours=hours))


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


async def status_rows(
    redis: Redis, keys: RedisKeys, records: list[Integration], settings: Settings
) -> list[dict[str, Any]]:
    """One status row per integration: its state, badge, fix and pending events."""
    states = await read_states(redis, keys, settings, records)
    out = []
    for record in records:
        state = states[record.id]
        out.append(
            {
                "record": record,
                "state": state,
                "last_event": state.last_event_at,
                "auth_failures": state.auth_failures,
                "pending": state.pending,
                "health": badge(state),
                "fix": state.fix,
            }
        )
    return out
