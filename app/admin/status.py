"""What the page says about an integration's state: `app.state` decides, this words it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from app.integration import Integration
from app.redis_keys import RedisKeys
from app.settings import Settings
from app.state import IntegrationState, State, read_states

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


async def status_rows(
    redis: Redis,
    keys: RedisKeys,
    records: list[Integration],
    settings: Settings,
    rq: Redis | None = None,
) -> list[dict[str, Any]]:
    """One status row per integration: its state, badge, fix and pending events."""
    states = await read_states(redis, keys, settings, records, rq)
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
