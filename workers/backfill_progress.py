"""A running backfill's record, written only under its lease, and its rows appended to the
shard stream the way the ingest script appends live events (§13).

Progress is kept so that a job killed anywhere leaves it exact for the next one: the
totals (`rows_read`, `rows_skipped`, `chats_counted`) move only when a whole link is
imported, together with the list of links done (and the window's share, `w_*`); a link's
progress so far is in `l_*`, reset when a link starts (again). A window is done when all
its links are; a window whose report must be asked for again (Freshchat forgot it) takes
its share back out, as its links will come again under other names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from app.compact import Compact, Kind, chat_key
from app.extract_rows import Row, RowReader
from app.jobs import enqueue_drain
from app.leases import Lease
from app.redis_keys import RedisKeys
from app.settings import Settings

PARTIAL = ("l_read", "l_skipped", "l_chats")  # the current link's, so far
WINDOW = ("w_read", "w_skipped", "w_chats")  # the current window's links done
TOTALS = ("rows_read", "rows_skipped", "chats_counted")  # every link done


def _mapping(values: dict[str, str]) -> dict[FieldT, EncodableT]:
    """Fields for HSET (redis-py types its keys as any encodable)."""
    return {k: v for k, v in values.items()}


@dataclass
class Progress:
    """One backfill's record (a local copy, kept in step) and its appends."""

    redis: Redis
    rq: Redis  # RQ's Redis: the drain jobs of the appended rows
    settings: Settings
    lease: Lease
    key: str
    integration_id: str
    shard: int
    record: dict[str, str]
    sent: list[int] = field(default_factory=lambda: [0, 0, 0])  # this link's l_* written

    def number(self, name: str) -> int:
        """A numeric field (0 when unset)."""
        return int(float(self.record.get(name) or 0))

    def set(self, **values: str) -> None:
        """Write fields."""
        mapping = _mapping(values)

        def fill(pipe: Pipeline) -> None:
            pipe.hset(self.key, mapping=mapping)

        self.lease.write(fill)
        self.record.update(values)

    def links_done(self) -> list[str]:
        """The identities of the current window's links imported so far."""
        done: list[str] = orjson.loads(self.record.get("links") or "[]")
        return done

    def window_done(self) -> None:
        """The current window is imported: on to the next."""
        reset = {"report": "", "fails": "0", "polls": "0", "links": "[]"}
        reset.update(dict.fromkeys(WINDOW, "0"))

        def fill(pipe: Pipeline) -> None:
            pipe.hincrby(self.key, "windows_done", 1)
            pipe.hset(self.key, mapping=_mapping(reset))

        self.lease.write(fill)
        self.record.update(windows_done=str(self.number("windows_done") + 1), **reset)

    def restart_window(self, **values: str) -> None:
        """Ask for the current window's report again: its links done so far are undone."""
        share = [self.number(name) for name in WINDOW]
        reset = {"report": "", "polls": "0", "links": "[]", **values}
        reset.update(dict.fromkeys(WINDOW, "0"))

        def fill(pipe: Pipeline) -> None:
            for name, n in zip(TOTALS, share, strict=True):
                if n:
                    pipe.hincrby(self.key, name, -n)
            pipe.hset(self.key, mapping=_mapping(reset))

        self.lease.write(fill)
        for name, n in zip(TOTALS, share, strict=True):
            self.record[name] = str(self.number(name) - n)
        self.record.update(reset)

    def start_link(self) -> None:
        """A link's import begins (or begins again after a crash)."""
        self.sent = [0, 0, 0]
        self.set(**dict.fromkeys(PARTIAL, "0"))

    def append(self, rows: Iterable[Row], reader: RowReader) -> None:
        """Append rows (and the reader's counts so far) as the ingest script does: stream
        entries and the pending count in one MULTI, then the drain flag and job."""
        encoded = [
            Compact(
                chat_key(r.conversation_id), Kind.SOLVED, r.time_ms, r.group_id, r.group_name
            ).encode(self.integration_id)
            for r in rows
        ]
        delta = [reader.read - self.sent[0], reader.skipped - self.sent[1], len(encoded)]
        if not any(delta):
            return
        rk = RedisKeys(self.settings.key_prefix)
        lease_ms = int(self.settings.drain_lease_seconds * 1000)

        def fill(pipe: Pipeline) -> None:
            stream = rk.stream(self.shard)
            for entry in encoded:
                pipe.xadd(stream, {"e": entry})
            if encoded:
                pipe.hincrby(rk.pending(self.shard), self.integration_id, len(encoded))
            for name, n in zip(PARTIAL, delta, strict=True):
                pipe.hincrby(self.key, name, n)
            pipe.set(rk.drain_flag(self.shard), "1", nx=True, px=lease_ms)

        replies: list[Any] = self.lease.write(fill)
        self.sent = [a + b for a, b in zip(self.sent, delta, strict=True)]
        if encoded and replies[-1]:  # nobody drains the shard right now
            enqueue_drain(self.rq, self.settings, self.shard)

    def link_done(self, identity: str) -> None:
        """The link is imported: its counts join the totals, in one MULTI."""
        links = orjson.dumps([*self.links_done(), identity]).decode()
        reset = {**dict.fromkeys(PARTIAL, "0"), "links": links, "expired": "0"}

        def fill(pipe: Pipeline) -> None:
            for names in (TOTALS, WINDOW):
                for name, n in zip(names, self.sent, strict=True):
                    pipe.hincrby(self.key, name, n)
            pipe.hset(self.key, mapping=_mapping(reset))

        self.lease.write(fill)
        for names in (TOTALS, WINDOW):
            for name, n in zip(names, self.sent, strict=True):
                self.record[name] = str(self.number(name) + n)
        self.record.update(reset)
        self.sent = [0, 0, 0]
