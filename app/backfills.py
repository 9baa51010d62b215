"""Backfill records (§13): validation, the one-at-a-time rule, progress views and cancel.

`Backfills(redis, settings)` takes a *synchronous* `redis.Redis` (the CLI's, the workers',
or the web tier's `sync_redis`), because creating a backfill enqueues an RQ job and RQ is
synchronous. Records live in that (data) Redis; jobs are enqueued and looked up in RQ's
(`rq`, see `app.jobs.rq_for` when none is given; §14). Async code uses `AsyncBackfills`,
the same methods run in a thread (`asyncio.to_thread`) with the sync client. The work
itself is `workers.backfill`'s; `schedule_backfills` is the workers' janitor's part: the
next job of a backfill that is due.

Redis keys (`BackfillKeys`; per-integration ones carry the shard's hash tag, so one
integration's backfill keys share a cluster slot with its counts):
- `<P>:{N}:bf:<iid>:<bid>` hash: one backfill's record and progress (see `view`);
- `<P>:{N}:bfl:<iid>` sorted set: the integration's backfill ids by creation time (the
  newest `KEEP` are kept);
- `<P>:{N}:bfa:<iid>` string: the id of its queued or running backfill (the 409 rule);
- `<P>:{N}:bfk:<iid>` string with a lease: the job (or canceller) working on it now;
- `<P>:{N}:bfs:<iid>` string with a TTL: a report was submitted lately (submission spacing);
- `<P>:{N}:bfq:<iid>` string with a TTL: a janitor just enqueued its next job;
- `<P>:backfills` set: integrations with an unfinished backfill (the janitor's list).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.errors import BadRequest, Conflict, NotFound
from app.integration import Integration
from app.integrations import ID_ALPHABET
from app.jobs import enqueue_backfill, rq_for
from app.leases import Lease, compare_and_delete
from app.redis_keys import RedisKeys, text
from app.settings import Settings

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
TERMINAL = frozenset({DONE, FAILED, CANCELLED})
KEEP = 20  # records kept per integration (older finished ones are deleted)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FIELDS = ("from", "to")


@dataclass(frozen=True)
class BackfillKeys:
    """Key names of the backfill records, under the product's key prefix."""

    prefix: str

    def _shard(self, shard: int) -> str:
        return RedisKeys(self.prefix).shard_prefix(shard)

    def index(self) -> str:
        """Set: integration ids with an unfinished backfill (global, like `integrations`)."""
        return f"{self.prefix}:backfills"

    def record(self, shard: int, iid: str, bid: str) -> str:
        """Hash: one backfill's record and progress."""
        return f"{self._shard(shard)}bf:{iid}:{bid}"

    def listing(self, shard: int, iid: str) -> str:
        """Sorted set: the integration's backfill ids scored by creation time (ms)."""
        return f"{self._shard(shard)}bfl:{iid}"

    def active(self, shard: int, iid: str) -> str:
        """String: the id of the integration's queued or running backfill."""
        return f"{self._shard(shard)}bfa:{iid}"

    def lease(self, shard: int, iid: str) -> str:
        """String with a lease: who works on the integration's backfill right now."""
        return f"{self._shard(shard)}bfk:{iid}"

    def scheduling(self, shard: int, iid: str) -> str:
        """String with a short TTL: a janitor just enqueued the backfill's next job."""
        return f"{self._shard(shard)}bfq:{iid}"

    def submitted(self, shard: int, iid: str) -> str:
        """String with a TTL: a report was submitted less than the spacing ago."""
        return f"{self._shard(shard)}bfs:{iid}"


def new_backfill_id() -> str:
    """12 URL-safe characters (60 random bits)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(12))


def _bad(field_name: str, message: str) -> BadRequest:
    return BadRequest(message, [{"loc": ["body", field_name], "msg": message}])


def parse_range(body: object, today: date, retention_days: int) -> tuple[date, date]:
    """`{"from", "to"}` UTC days, inclusive -> dates; BadRequest names the bad field."""
    if not isinstance(body, Mapping):
        raise BadRequest(
            'body must be a JSON object {"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}',
            [{"loc": ["body"], "msg": "not an object"}],
        )
    for name in body:
        if name not in _FIELDS:
            raise _bad(str(name), f"unknown field {str(name)[:40]!r}: give only from and to")
    days: dict[str, date] = {}
    for name in _FIELDS:
        value = body.get(name)
        if value is None:
            raise _bad(name, f"{name} is required: a UTC day as YYYY-MM-DD")
        try:
            if not isinstance(value, str) or not _DAY.match(value):
                raise ValueError
            days[name] = date.fromisoformat(value)
        except ValueError:
            raise _bad(name, f"{name} must be a UTC day as YYYY-MM-DD") from None
    first, last = days["from"], days["to"]
    earliest = today - timedelta(days=retention_days - 1)
    for name, day in days.items():
        if day > today:
            raise _bad(name, f"{name} is in the future (today is {today.isoformat()} UTC)")
    if first > last:
        raise _bad("from", f"from ({first.isoformat()}) is after to ({last.isoformat()})")
    if first < earliest:
        raise _bad(
            "from",
            f"from is older than the counts retention ({retention_days} days): "
            f"the earliest day is {earliest.isoformat()}",
        )
    return first, last


def windows(first: date, last: date, days: int) -> list[tuple[date, date]]:
    """The report windows: `days` UTC days each (the last may be shorter), inclusive."""
    out = []
    start = first
    while start <= last:
        end = min(last, start + timedelta(days=days - 1))
        out.append((start, end))
        start = end + timedelta(days=1)
    return out


def window_times(window: tuple[date, date]) -> tuple[str, str]:
    """A window as the report API's `start` and `end` (00:00:00.000Z .. 23:59:59.999Z)."""
    return f"{window[0].isoformat()}T00:00:00.000Z", f"{window[1].isoformat()}T23:59:59.999Z"


def view(raw: Mapping[Any, Any], now: float) -> dict[str, Any]:
    """A record as the API, CLI and page show it (partial progress of a download included)."""
    f = {text(k): text(v) for k, v in raw.items()}

    def num(name: str) -> int:
        return int(f.get(name) or 0)

    def moment(name: str) -> int | None:
        return int(float(f[name])) if f.get(name) else None

    state, total, done = f.get("state", ""), num("windows_total"), num("windows_done")
    started = moment("started_at")
    eta: int | None = None
    if state == DONE:
        eta = 0
    elif state == RUNNING and started is not None and done:
        eta = round((now - started) / done * (total - done))
    return {
        "backfill_id": f.get("backfill_id", ""),
        "integration_id": f.get("integration_id", ""),
        "state": state,
        "from": f.get("from", ""),
        "to": f.get("to", ""),
        "windows_total": total,
        "windows_done": done,
        "rows_read": num("rows_read") + num("l_read"),
        "rows_skipped": num("rows_skipped") + num("l_skipped"),
        "chats_counted": num("chats_counted") + num("l_chats"),
        "created_at": moment("created_at"),
        "started_at": started,
        "finished_at": moment("finished_at"),
        "eta_seconds": eta,
        "error": f.get("error") or None,
    }


@dataclass
class Backfills:
    """Create, list, read and cancel backfills (sync Redis; see the module docstring)."""

    redis: Redis
    settings: Settings
    clock: Callable[[], float] = time.time
    rq: Redis | None = None  # RQ's Redis; None: the data one, or RQ_REDIS_URL's if set

    def __post_init__(self) -> None:
        self.keys = BackfillKeys(self.settings.key_prefix)
        self.rq_redis: Redis = self.rq if self.rq is not None else rq_for(self.redis, self.settings)

    def integration(self, integration_id: str) -> Integration:
        """The stored integration, or NotFound."""
        raw = self.redis.hget(RedisKeys(self.settings.key_prefix).integrations(), integration_id)
        if raw is None:
            raise NotFound(f"no integration {integration_id!r}")
        return Integration.load(raw)

    def raw(self, shard: int, integration_id: str, backfill_id: str) -> dict[str, str] | None:
        """A record's fields as text, or None."""
        found = self.redis.hgetall(self.keys.record(shard, integration_id, backfill_id))
        return {text(k): text(v) for k, v in found.items()} if found else None

    def create(self, integration_id: str, body: object) -> dict[str, Any]:
        """Validate `{"from", "to"}`, record the backfill and enqueue its job.

        NotFound (no integration), BadRequest (names the field), Conflict (the integration
        is deleted, or already has a queued or running backfill: `detail` names it).
        """
        integration = self.integration(integration_id)
        if not integration.active:
            raise Conflict("the integration is deleted")
        now = self.clock()
        today = datetime.fromtimestamp(now, UTC).date()
        first, last = parse_range(body, today, self.settings.counts_retention_days)
        shard, bid = integration.shard, new_backfill_id()
        record: dict[FieldT, EncodableT] = {
            "backfill_id": bid,
            "integration_id": integration_id,
            "state": QUEUED,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "windows_total": len(windows(first, last, self.settings.backfill_window_days)),
            "window_days": self.settings.backfill_window_days,  # kept if the setting changes
            "created_at": f"{now:.3f}",
            "links": "[]",
        }
        # The record first: a claim then always names a record (one without is stale).
        key = self.keys.record(shard, integration_id, bid)
        self.redis.hset(key, mapping=record)
        try:
            self._claim(shard, integration_id, bid)
        except Conflict:
            self.redis.delete(key)
            raise
        listing = self.keys.listing(shard, integration_id)
        # transaction=True said explicitly: a cluster client's pipeline is not one by default.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(listing, {bid: int(now * 1000)})
            pipe.zrange(listing, 0, -(KEEP + 1))
            old = pipe.execute()[-1]
        for gone in map(text, old):  # all finished: the one unfinished backfill is the newest
            self.redis.delete(self.keys.record(shard, integration_id, gone))
            self.redis.zrem(listing, gone)
        self.redis.sadd(self.keys.index(), integration_id)
        job = enqueue_backfill(self.rq_redis, self.settings, integration_id, bid)
        self.redis.hset(self.keys.record(shard, integration_id, bid), "job", job)
        return self.get(integration_id, bid)

    def _claim(self, shard: int, integration_id: str, bid: str) -> None:
        """Become the integration's one unfinished backfill, or Conflict."""
        active = self.keys.active(shard, integration_id)
        for _ in range(3):
            if self.redis.set(active, bid, nx=True):
                return
            other = text(self.redis.get(active) or b"")
            record = self.raw(shard, integration_id, other) if other else None
            if record is not None and record.get("state") not in TERMINAL:
                state = record.get("state", QUEUED)
                raise Conflict(
                    f"backfill {other} of this integration is {state}: wait for it to "
                    "finish or cancel it first",
                    [{"backfill_id": other, "state": state}],
                )
            compare_and_delete(self.redis, active, other)  # stale: finished, or no record
        raise Conflict("another backfill of this integration is being started right now")

    def list(self, integration_id: str) -> list[dict[str, Any]]:
        """The integration's backfills, newest first (NotFound: no integration)."""
        shard = self.integration(integration_id).shard
        bids = [
            text(b) for b in self.redis.zrevrange(self.keys.listing(shard, integration_id), 0, -1)
        ]
        with self.redis.pipeline(transaction=False) as pipe:
            for bid in bids:
                pipe.hgetall(self.keys.record(shard, integration_id, bid))
            found = pipe.execute()
        now = self.clock()
        return [view(raw, now) for raw in found if raw]

    def get(self, integration_id: str, backfill_id: str) -> dict[str, Any]:
        """One backfill (NotFound: no such integration or backfill)."""
        shard = self.integration(integration_id).shard
        raw = self.raw(shard, integration_id, backfill_id)
        if raw is None:
            raise NotFound(f"no backfill {backfill_id!r} for integration {integration_id!r}")
        return view(raw, self.clock())

    def cancel(self, integration_id: str, backfill_id: str) -> dict[str, Any]:
        """Stop a queued or running backfill; it ends `cancelled` (at once when no job works
        on it, else when its job reaches the next step). Conflict if it already finished."""
        shard = self.integration(integration_id).shard
        record = self.raw(shard, integration_id, backfill_id)
        if record is None:
            raise NotFound(f"no backfill {backfill_id!r} for integration {integration_id!r}")
        state = record.get("state", "")
        if state == CANCELLED:
            return view(record, self.clock())
        if state in TERMINAL:
            raise Conflict(f"backfill {backfill_id} already finished ({state})")
        self.redis.hset(self.keys.record(shard, integration_id, backfill_id), "cancel", "1")
        lease = Lease(self.redis, self.keys.lease(shard, integration_id), self.lease_ms)
        if lease.acquire():
            try:
                self.finish(lease, shard, integration_id, backfill_id, CANCELLED, "")
            finally:
                lease.release()
        return self.get(integration_id, backfill_id)

    @property
    def lease_ms(self) -> int:
        """A worker's lease on a backfill: as long as a drain's (DRAIN_LEASE_SECONDS)."""
        return int(self.settings.drain_lease_seconds * 1000)

    def finish(
        self,
        lease: Lease,
        shard: int,
        integration_id: str,
        backfill_id: str,
        state: str,
        error: str,
    ) -> None:
        """End a backfill (under its lease) and free the integration for the next one."""
        record = self.keys.record(shard, integration_id, backfill_id)
        values: dict[FieldT, EncodableT] = {
            "state": state,
            "finished_at": f"{self.clock():.3f}",
            "error": error,
            "next_at": "0",
            "job": "",
        }

        def fill(pipe: Pipeline) -> None:
            pipe.hset(record, mapping=values)

        lease.write(fill)
        # Leave the janitor's list first: a backfill created right after must stay in it.
        self.redis.srem(self.keys.index(), integration_id)
        compare_and_delete(self.redis, self.keys.active(shard, integration_id), backfill_id)


@dataclass
class AsyncBackfills:
    """`Backfills` for async code: each call runs in a thread with the sync client."""

    backfills: Backfills

    async def create(self, integration_id: str, body: object) -> dict[str, Any]:
        """See `Backfills.create`."""
        return await asyncio.to_thread(self.backfills.create, integration_id, body)

    async def list(self, integration_id: str) -> list[dict[str, Any]]:
        """See `Backfills.list`."""
        return await asyncio.to_thread(self.backfills.list, integration_id)

    async def get(self, integration_id: str, backfill_id: str) -> dict[str, Any]:
        """See `Backfills.get`."""
        return await asyncio.to_thread(self.backfills.get, integration_id, backfill_id)

    async def cancel(self, integration_id: str, backfill_id: str) -> dict[str, Any]:
        """See `Backfills.cancel`."""
        return await asyncio.to_thread(self.backfills.cancel, integration_id, backfill_id)


# --- the workers' janitor: a backfill that waits, or whose worker died, gets its next job ---


def _job_waiting(rq: Redis, job_id: str) -> bool:
    """Whether RQ still holds this job to run (queued, scheduled or deferred)."""
    try:
        status = Job.fetch(job_id, connection=rq).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


def schedule_backfills(
    redis: Redis, settings: Settings, now: float | None = None, *, rq: Redis | None = None
) -> list[str]:
    """Enqueue the next job of every unfinished backfill that is due and that no live job
    holds or waits for (a dead worker's lease ran out); returns the backfill ids.

    `redis` holds the records, `rq` is RQ's Redis (None: as `Backfills` decides).
    """
    store = Backfills(redis, settings, rq=rq)
    keys = store.keys
    now = time.time() if now is None else now
    scheduled = []
    for iid in sorted(text(i) for i in redis.smembers(keys.index())):
        try:
            shard = store.integration(iid).shard
        except NotFound:
            redis.srem(keys.index(), iid)
            continue
        bid = text(redis.get(keys.active(shard, iid)) or b"")
        record = store.raw(shard, iid, bid) if bid else None
        if record is None or record.get("state") in TERMINAL:
            redis.srem(keys.index(), iid)
            if bid:
                compare_and_delete(redis, keys.active(shard, iid), bid)
            continue
        if redis.exists(keys.lease(shard, iid)):
            continue
        if float(record.get("next_at") or 0) > now and not record.get("cancel"):
            continue
        if record.get("job") and _job_waiting(store.rq_redis, record["job"]):
            continue
        # Every worker's janitor looks: one of them enqueues (a second job would only idle).
        guard_ms = int(max(1.0, 2 * settings.janitor_interval_seconds) * 1000)
        if not redis.set(keys.scheduling(shard, iid), "1", nx=True, px=guard_ms):
            continue
        job = enqueue_backfill(store.rq_redis, settings, iid, bid)
        redis.hset(keys.record(shard, iid, bid), "job", job)
        scheduled.append(bid)
    return scheduled
