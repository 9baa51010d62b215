"""Integration state that tells the truth (§8), the one rule the API, page and metrics share.

`app.activity` classifies the traffic (receiving, waiting, stale, only auth failures);
this adds what the workers see: events of this integration pending too long (`stuck`,
with its cause and the fix) and the injixo app's lifecycle (`app_uninstalled`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from app.activity import Activity, Traffic, read_activity, traffic
from app.errors import AppError
from app.integration import Integration
from app.integrations import decrypt_secret
from app.redis_client import async_rq_client
from app.redis_keys import RedisKeys, text
from app.settings import Settings

RQ_QUEUE_WORKERS = "rq:workers:{queue}"  # rq's registry of the workers serving a queue


class State(StrEnum):
    """What an integration's state is, in the order they take precedence (deleted aside)."""

    STUCK = "stuck"
    APP_UNINSTALLED = "app_uninstalled"
    AUTH_FAILING = "auth_failing"
    STALE = "stale"
    WAITING_FOR_FIRST_EVENT = "waiting_for_first_event"
    RECEIVING = "receiving"
    DELETED = "deleted"


class Stuck(StrEnum):
    """Why events of an integration wait longer than STUCK_AFTER_SECONDS."""

    KEY_REJECTED = "freshchat_rejects_key"
    FRESHCHAT_UNREACHABLE = "freshchat_unreachable"
    KEY_UNDECRYPTABLE = "key_undecryptable"
    NO_WORKER = "no_worker"
    WORKERS_BEHIND = "workers_behind"


@dataclass(frozen=True)
class Backlog:
    """What waits for one integration."""

    pending: int  # stored, not yet counted (parked included)
    parked: int  # waiting for a group name
    oldest_parked_ms: int | None
    oldest_stream_ms: int | None  # the shard's oldest entry, when this integration has any
    lookup_failure: str  # the last failed Freshchat group lookup's outcome ("" if none)


@dataclass(frozen=True)
class IntegrationState:
    """An integration's state with its reason in words, the fix, and what it rests on."""

    state: State
    reason: str
    fix: str
    cause: str  # the stuck cause's code, "" otherwise
    pending: int
    last_event_at: int | None
    auth_failures: int
    app_installed_at: int | None
    app_uninstalled_at: int | None

    @property
    def stale(self) -> bool:
        """The compatibility flag: an operator should look (anything but fine)."""
        return self.state in (State.STUCK, State.APP_UNINSTALLED, State.AUTH_FAILING, State.STALE)

    def api_fields(self) -> dict[str, Any]:
        """The fields the admin API adds to an integration."""
        return {
            "state": self.state.value,
            "state_reason": self.reason,
            "state_fix": self.fix or None,
            "pending_events": self.pending,
            "last_event_at": self.last_event_at,
            "auth_failures": self.auth_failures,
            "app_installed_at": self.app_installed_at,
            "stale": self.stale,
        }


def _id_ms(entries: Any) -> int | None:
    if not entries:
        return None
    return int(text(entries[0][0]).split("-")[0])


async def workers_alive(redis: Redis, settings: Settings, rq: Redis | None = None) -> int:
    """RQ workers serving the product's queue whose heartbeat key (in RQ's Redis) exists."""
    # RQ's Redis is `rq` if given, else the data Redis when RQ shares it (§14).
    if rq is not None or settings.rq_url == settings.redis_url:
        return await _workers_alive(rq if rq is not None else redis, settings)
    # A caller holding only the data connection (the API, the page, the CLI): one short
    # connection to RQ's Redis for this read.
    client = async_rq_client(settings, socket_timeout=5, socket_connect_timeout=2)
    try:
        return await _workers_alive(client, settings)
    finally:
        await client.aclose()


async def _workers_alive(rq: Redis, settings: Settings) -> int:
    names = [text(n) for n in await rq.smembers(RQ_QUEUE_WORKERS.format(queue=settings.rq_queue))]
    if not names:
        return 0
    return int(await rq.exists(*names))


async def read_backlogs(
    redis: Redis, keys: RedisKeys, records: list[Integration]
) -> dict[str, Backlog]:
    """Pending, parked and the oldest waiting event of each integration, in one pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        for r in records:
            pipe.hget(keys.pending(r.shard), r.id)
            pipe.xlen(keys.parked(r.shard, r.id))
            pipe.xrange(keys.parked(r.shard, r.id), "-", "+", count=1)
            pipe.xrange(keys.stream(r.shard), "-", "+", count=1)
            pipe.hget(keys.group_backoff(r.shard, r.id), "o")
        replies = await pipe.execute()
    out = {}
    for n, r in enumerate(records):
        pending, parked, first_parked, first_stream, failure = replies[n * 5 : n * 5 + 5]
        pending_n, parked_n = max(0, int(pending or 0)), int(parked)
        out[r.id] = Backlog(
            pending=max(pending_n, parked_n),
            parked=parked_n,
            oldest_parked_ms=_id_ms(first_parked),
            oldest_stream_ms=_id_ms(first_stream) if pending_n > parked_n else None,
            lookup_failure=text(failure) if failure else "",
        )
    return out


def _count(events: int) -> str:
    return f"{events} event{'s' if events != 1 else ''}"


def _wait(events: int) -> str:
    return f"{_count(events)} wait{'s' if events == 1 else ''}"


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def stuck_cause(
    integration: Integration,
    backlog: Backlog,
    settings: Settings,
    workers: int,
    now: float,
) -> tuple[Stuck, str, str] | None:
    """Why this integration's events wait too long (cause, reason, fix), or None."""
    limit_ms = (now - settings.stuck_after_seconds) * 1000
    parked_old = backlog.oldest_parked_ms is not None and backlog.oldest_parked_ms < limit_ms
    stream_old = backlog.oldest_stream_ms is not None and backlog.oldest_stream_ms < limit_ms
    if not (parked_old or stream_old):
        return None
    waiting = backlog.pending
    if stream_old and workers == 0:
        return (
            Stuck.NO_WORKER,
            f"No worker is running: {_wait(waiting)} to be counted",
            "Start a worker (`injixo-freshchat worker`); the events are then counted, once.",
        )
    if parked_old:
        oldest = now - (backlog.oldest_parked_ms or 0) / 1000
        since = f"the oldest for {_minutes(oldest)}"
        try:
            decrypt_secret(settings, integration.freshchat_api_key_enc)
        except AppError:
            return (
                Stuck.KEY_UNDECRYPTABLE,
                f"The stored Freshchat API key cannot be decrypted with this ENCRYPTION_KEY: "
                f"{_wait(backlog.parked)} for their group names ({since})",
                "Start the service with the ENCRYPTION_KEY the key was saved with, or enter "
                "the Freshchat API key again (Edit); the events are then counted, once.",
            )
        if backlog.lookup_failure == "unauthorized":
            return (
                Stuck.KEY_REJECTED,
                f"Freshchat rejects the stored API key (rotated in Freshchat?): "
                f"{_wait(backlog.parked)} for their group names ({since})",
                "Enter the current Freshchat API key (Edit); the events are then counted, once.",
            )
        if workers == 0:
            return (
                Stuck.NO_WORKER,
                f"No worker is running: {_wait(backlog.parked)} for their group names",
                "Start a worker (`injixo-freshchat worker`); the events are then counted, once.",
            )
        return (
            Stuck.FRESHCHAT_UNREACHABLE,
            f"Freshchat cannot be reached to name the groups of {_count(backlog.parked)} "
            f"({since}; last answer: {backlog.lookup_failure or 'none yet'})",
            f"Check that {integration.freshchat_domain} is the account's Freshchat domain; if "
            "Freshchat is down, nothing is lost: the events are counted once it answers.",
        )
    oldest = now - (backlog.oldest_stream_ms or 0) / 1000
    return (
        Stuck.WORKERS_BEHIND,
        f"The workers are behind: {_wait(waiting)}, the oldest for {_minutes(oldest)}",
        "Start more workers (`injixo-freshchat worker`).",
    )


_TRAFFIC = {
    Traffic.RECEIVING: State.RECEIVING,
    Traffic.WAITING: State.WAITING_FOR_FIRST_EVENT,
    Traffic.DELETED: State.DELETED,
    Traffic.ONLY_REJECTED: State.AUTH_FAILING,
    Traffic.REJECTED_LATELY: State.AUTH_FAILING,
    Traffic.SILENT_SINCE_SETUP: State.STALE,
    Traffic.SILENT: State.STALE,
    Traffic.SILENT_WITH_REJECTIONS: State.STALE,
}
_KEY_FIX = (
    "Check the injixo API key in the injixo app's settings in Freshchat "
    "(or generate a new one here)."
)
WORDS = {
    Traffic.DELETED: ("Deleted", ""),
    Traffic.WAITING: (
        "Waiting for the first event",
        "Install the injixo app in Freshchat with an injixo API key from this page, or set "
        "up Freshchat's own webhooks there.",
    ),
    Traffic.RECEIVING: ("Receiving events", ""),
    Traffic.ONLY_REJECTED: (
        "Only rejected requests so far: the app sends with a wrong or revoked key",
        _KEY_FIX,
    ),
    Traffic.REJECTED_LATELY: (
        "Only rejected requests lately: the app sends with a wrong or revoked key",
        _KEY_FIX,
    ),
    Traffic.SILENT_SINCE_SETUP: (
        "No events received in the {hours} h since setup",
        "Check that the injixo app is installed in Freshchat.",
    ),
    Traffic.SILENT: (
        "No events for more than {hours} h",
        "Check that the injixo app is still installed in Freshchat.",
    ),
    Traffic.SILENT_WITH_REJECTIONS: (
        "No events for more than {hours} h (and rejected requests since)",
        _KEY_FIX,
    ),
}
_UNINSTALLED = (
    "The injixo app was uninstalled from Freshchat",
    "Install the injixo app again in Freshchat (Admin > Marketplace apps) with an injixo "
    "API key from this page.",
)


def decide(
    integration: Integration,
    activity: Activity,
    backlog: Backlog,
    installed: int | None,
    uninstalled: int | None,
    settings: Settings,
    workers: int,
    now: float,
) -> IntegrationState:
    """The integration's state from everything recorded about it."""

    def state(kind: State, reason: str, fix: str, cause: str = "") -> IntegrationState:
        return IntegrationState(
            kind,
            reason,
            fix,
            cause,
            pending=backlog.pending,
            last_event_at=activity.last_event_at,
            auth_failures=activity.auth_failures,
            app_installed_at=installed,
            app_uninstalled_at=uninstalled,
        )

    flow = traffic(integration, activity, now, settings.stale_after_seconds)
    if flow is not Traffic.DELETED:
        stuck = stuck_cause(integration, backlog, settings, workers, now)
        if stuck is not None:
            return state(State.STUCK, stuck[1], stuck[2], stuck[0].value)
        # Uninstalled after the last install, and no event since: the app is gone.
        last = activity.last_event_at or 0
        if uninstalled and (installed or 0) <= uninstalled and last <= uninstalled:
            return state(State.APP_UNINSTALLED, *_UNINSTALLED)
    reason, fix = WORDS[flow]
    hours = max(1, round(settings.stale_after_seconds / 3600))
    return state(_TRAFFIC[flow], reason.format(hours=hours), fix)


async def read_states(
    redis: Redis,
    keys: RedisKeys,
    settings: Settings,
    records: list[Integration],
    rq: Redis | None = None,
) -> dict[str, IntegrationState]:
    """The state of each integration, from a few pipelined reads (`rq`: see workers_alive)."""
    activity = await read_activity(redis, keys)
    backlogs = await read_backlogs(redis, keys, records)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.app_installed())
        pipe.hgetall(keys.app_uninstalled())
        installed, uninstalled = await pipe.execute()
    installed_at = {text(k): int(v) for k, v in installed.items()}
    uninstalled_at = {text(k): int(v) for k, v in uninstalled.items()}
    workers = await workers_alive(redis, settings, rq)
    now = time.time()
    return {
        r.id: decide(
            r,
            activity.get(r.id) or Activity(None, 0, None),
            backlogs[r.id],
            installed_at.get(r.id),
            uninstalled_at.get(r.id),
            settings,
            workers,
            now,
        )
        for r in records
    }
