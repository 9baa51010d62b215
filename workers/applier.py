"""The Applier: runs the apply and end-drain scripts (`app/lua/`) for a shard's batches.

The apply script touches only keys it is given (§14): each batch is planned here (its
entries read, each chat placed in its bucket, every key named by tag), buckets are split
if the batch could fill them, and the script applies it with exactly those keys. A key
found needed only while applying (the counts of a day a chat moves out of) leaves its
event in the stream; what is left of the batch follows with the key declared. The next
batch is read and planned while Redis applies the current one.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from redis import Redis
from redis.exceptions import NoScriptError

from app.chat_state import (
    BUCKET_LOAD,
    SPLIT_AT,
    bucket_count,
    chat_hash,
    place,
)
from app.compact import Kind
from app.lua import Lua, bind, load
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from workers.retrying import retrying

log = logging.getLogger("injixo.apply")

TAGS_AT = 13  # the apply script's ARGV index of its first tag (1-based), in every mode
FIXED_KEYS = 9  # the shard's own keys, first in KEYS
TERMINAL = frozenset({Kind.SOLVED, Kind.DELETED, Kind.SOLVED_GROUP_UNNAMED})  # they count
DAY_MS = 86_400_000
HASHES_KEPT = 100_000  # recent chats' placement hashes remembered
MOVED_DAYS_KEPT = 3  # per integration: the days its chats moved out of, declared ahead
SPLITS_PER_CALL = 64  # each moves about BUCKET_LOAD entries
NAME_CACHE = 200_000  # tag -> key names remembered per worker


Event = tuple[str, str, Any, Any, Any]  # integration, chat, kind, time, group id


def _event(fields: list[bytes] | dict[bytes, bytes]) -> Event | None:
    """(integration, chat, kind, time) of an entry's event, or None (the script judges it)."""
    if type(fields) is list:  # as Redis sends it: [field, value, ...]
        at = fields.index(b"e") if b"e" in fields[::2] else -1
        raw = fields[at + 1] if at >= 0 and at % 2 == 0 else None
    else:
        raw = cast(dict[bytes, bytes], fields).get(b"e")
    try:
        event = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
    if type(event) is not list or len(event) != 6:
        return None
    iid, chat, kind, t, gid = event[:5]
    if type(iid) is not str or type(chat) is not str:
        return None
    return iid, chat, kind, t, gid


def _id(entry_id: str) -> tuple[int, int]:
    """A stream entry id, comparable."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def send(connection: Any, *args: Any) -> None:
    """Send one command on a connection of redis-py's pool; its answer is read later."""
    connection.send_command(*args)


Ahead = tuple[int, str, str, str, int]  # shard, source, start, end, count of a batch read
# tags, plan, its integrations, key names, events per integration
Planned = tuple[list[str], list[Any], int, list[str], dict[str, int]]


@dataclass(frozen=True)
class BatchResult:
    """What one apply call did."""

    last_id: str
    applied: int
    needs: list[tuple[str, str]]
    dead_ids: list[str]
    error: str


@dataclass
class Applier:
    """Runs the apply script for one shard's stream (or its dead-letter stream)."""

    redis: Redis
    settings: Settings
    names: dict[tuple[int, str], str] = field(default_factory=dict)
    #: (shard, iid) -> the bucket count last seen; the script says when it is out of date
    layouts: dict[tuple[int, str], int] = field(default_factory=dict)
    #: (shard, iid) -> the entries its buckets held after the last batch (an upper bound)
    entries: dict[tuple[int, str], int] = field(default_factory=dict)
    #: (shard, iid) -> counts tags of the days its chats last moved out of (newest first)
    moved_from: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    _hashes: dict[str, int] = field(default_factory=dict)  # chat -> chat_hash, recent ones
    _ahead: tuple[Ahead, list[Any], Planned] | None = None  # the next batch, read and planned

    def __post_init__(self) -> None:
        self.redis_keys = RedisKeys(self.settings.key_prefix)
        # redis-py's Script sends EVALSHA and loads the source again after NOSCRIPT
        # (a Redis restart), so nothing needs loading up front.
        self._apply = bind(self.redis, Lua.APPLY)
        self._end_drain = bind(self.redis, Lua.END_DRAIN)
        # XRANGE without redis-py's reply parsing (a dict per entry) for the drain's reads,
        # on one Redis (a cluster client parses on its nodes: it keeps them).
        self._raw: Redis | None = None
        if isinstance(self.redis, Redis):
            self._raw = copy.copy(self.redis)
            callbacks = copy.copy(self.redis.response_callbacks)
            callbacks.pop("XRANGE")
            self._raw.response_callbacks = callbacks

    def _fixed(self, shard: int, source: str) -> list[str]:
        """The shard's own keys, KEYS[1..9] of the apply script."""
        rk = self.redis_keys
        return [
            source,
            rk.dead(shard),
            rk.stats(shard),
            rk.revisions(shard),
            rk.changes(shard),
            rk.change_hours(shard),
            rk.pending(shard),
            rk.parked_integrations(shard),
            rk.chat_buckets(shard),
        ]

    def _named(self, shard: int, tags: list[str]) -> list[str]:
        names = self.names
        if len(names) > NAME_CACHE:
            names.clear()
        out = []
        for tag in tags:
            name = names.get((shard, tag))
            if name is None:
                name = names[(shard, tag)] = self.redis_keys.tagged(shard, tag)
            out.append(name)
        return out

    def run_script(
        self,
        shard: int,
        source: str,
        mode: str,
        head: list[Any],
        tags: list[str],
        plan: list[Any] | None = None,
        names: list[str] | None = None,
    ) -> Any:
        """One script call: the shard's keys, then one key per tag (and the apply's plan)."""
        named = names if names is not None else self._named(shard, tags)
        keys = self._fixed(shard, source) + named
        args = [mode, *head, *[""] * (TAGS_AT - 2 - len(head)), *tags, *(plan or ())]
        return self._apply(keys=keys, args=args)

    def apply(
        self,
        shard: int,
        start: str = "-",
        *,
        count: int | None = None,
        dead_letter: bool = False,
        end: str = "+",
        parked: str = "",
    ) -> BatchResult:
        """Apply up to `count` entries from `start` of the shard's stream (events that wait for
        a group name are parked), of its dead-letter stream, or of `parked`'s parking stream.
        Connection errors and a cluster's TRYAGAIN/CLUSTERDOWN are retried: a batch is
        idempotent."""
        return retrying(lambda: self._apply_once(shard, start, count, dead_letter, end, parked))

    def _apply_once(
        self, shard: int, start: str, count: int | None, dead_letter: bool, end: str, parked: str
    ) -> BatchResult:
        rk = self.redis_keys
        source = rk.stream(shard)
        if dead_letter:
            source = rk.dead(shard)
        elif parked:
            source = rk.parked(shard, parked)
        s = self.settings
        limit = count or s.drain_batch
        parking = "park" if not (dead_letter or parked) else ("parked" if parked else "")
        entries, planned = self._take_ahead((shard, source, start, end, limit))
        if planned is None:
            entries = self._read(source, start, end, limit)
        if not entries and not (parked and start == "-"):
            return BatchResult("", 0, [], [], "")
        # (A whole pass over an emptied parking stream still runs: it forgets the waits.)
        range_end = text(entries[-1][0]) if entries else end  # not entries added since
        ahead: Ahead | None = None
        if parking == "park" and len(entries) == limit and self._raw is not None:
            ahead = (shard, source, "(" + range_end, end, limit)  # likely more: read ahead
        head: list[Any] = [
            start,
            limit,
            range_end,
            s.chat_ttl_days,
            s.counts_retention_days * 86_400,
            int(time.time()),
            "1" if dead_letter else "0",
            s.changes_retention_days * 24,
            "0" if dead_letter or parked else "1",
            parked,
            0,  # the integrations in the plan (set by _plan)
        ]
        last, applied, needs, dead_ids, error = "", 0, [], [], ""
        extra: list[str] = []
        while True:
            if planned is None or extra or not self._realize(shard, planned):
                planned = self._plan(shard, entries, extra, parking, parked)
                if not self._realize(shard, planned):
                    continue  # another worker splits: its counts come with the next plan
            current, planned = planned, None
            tags, plan, layouts, names, _ = current
            head[-1] = layouts
            if ahead is not None:
                out = self._run_reading_ahead(shard, source, head, current, ahead)
                ahead = None
            else:
                out = self.run_script(shard, source, "apply", head, tags, plan, names)
            step_last, step_applied, step_needs, step_dead, step_error, missing, kept, stale = out
            applied += int(step_applied)
            needs += [text(n) for n in step_needs]
            dead_ids += [text(d) for d in step_dead]
            error = text(step_error)
            for i in range(0, len(kept), 2):
                self.entries[(shard, text(kept[i]))] = int(kept[i + 1])
            if step_last and (not last or _id(text(step_last)) > _id(last)):
                last = text(step_last)  # a later pass over left events ends earlier
            for i in range(0, len(stale), 2):
                self.layouts[(shard, text(stale[i]))] = int(stale[i + 1])
            wanted = [text(m) for m in missing]
            if error or not (stale or wanted):
                break
            if wanted:
                # Events left for keys found needed while applying (or the stream changed
                # under the plan): what is left of the range, again, with them declared.
                more = [m for m in wanted if m and m not in extra]
                for tag in more:
                    if tag.startswith("n|"):
                        days = self.moved_from.setdefault((shard, tag.split("|")[1]), [])
                        days[:] = [tag, *days[: MOVED_DAYS_KEPT - 1]]
                if not more and "" not in wanted:
                    raise RuntimeError(f"apply script asks again for declared keys {wanted!r}")
                extra += more
                entries = self._read(source, start, head[2], limit)
                if not entries:
                    break
        pairs = list(dict.fromkeys((needs[i], needs[i + 1]) for i in range(0, len(needs), 2)))
        return BatchResult(last, applied, pairs, dead_ids, error)

    def _read(self, source: str, start: str, end: str, limit: int) -> list[Any]:
        """Entries as Redis sends them, `[id, [field, value, ...]]` (no per-entry dicts)."""
        if self._raw is None:
            return list(self.redis.xrange(source, start, end, limit) or [])
        reply = self._raw.execute_command(  # type: ignore[no-untyped-call]
            "XRANGE", source, start, end, "COUNT", limit
        )
        return list(reply or [])

    def _run_reading_ahead(
        self,
        shard: int,
        source: str,
        head: list[Any],
        planned: Planned,
        ahead: Ahead,
    ) -> Any:
        """The apply call, while the next batch is read and planned: its XRANGE goes first
        (on a second connection), then the script; the plan is made while Redis runs it."""
        tags, plan, _, names, counts = planned
        keys = self._fixed(shard, source) + names
        args = ["apply", *head, *tags, *plan]
        script = load(Lua.APPLY)
        pool = self.redis.connection_pool
        reader, writer = pool.get_connection(), pool.get_connection()
        try:
            # The read first, answered before the script is sent: Redis serves connections in
            # no set order, and a read queued behind the script would wait for it.
            _, source_ahead, start, end, limit = ahead
            send(reader, "XRANGE", source_ahead, start, end, "COUNT", limit)
            following = list(reader.read_response() or [])
            send(writer, "EVALSHA", script.sha, len(keys), *keys, *args)
            if following:
                planned = self._plan(shard, following, [], "park", "", before=counts)
                self._ahead = (ahead, following, planned)
            try:
                return writer.read_response()
            except NoScriptError:  # Redis restarted or flushed its scripts: EVAL caches it
                send(writer, "EVAL", script.source, len(keys), *keys, *args)
                return writer.read_response()
        except BaseException:
            for connection in (reader, writer):
                connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(reader)
            pool.release(writer)

    def _take_ahead(self, wanted: Ahead) -> tuple[list[Any], Planned | None]:
        """The batch read ahead if it is the one wanted now (else nothing)."""
        if self._ahead is None:
            return [], None
        (ahead, entries, planned), self._ahead = self._ahead, None
        return (entries, planned) if ahead == wanted else ([], None)

    def layouts_for(
        self, shard: int, events: list[Event | None], before: dict[str, int] | None = None
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The bucket count to place each integration's chats with (today's, or more when
        the events could fill its buckets past SPLIT_AT: split before they are applied,
        `_realize`), and its events. `before`: events of a batch applied ahead of these.
        (Each event adds at most one entry: an exact bound.)"""
        counts: dict[str, int] = {}
        for event in events:
            if event is not None:
                counts[event[0]] = counts.get(event[0], 0) + 1
        unknown = [iid for iid in counts if (shard, iid) not in self.entries]
        if unknown:
            fields = [f for iid in unknown for f in (iid, iid + "#")]
            values = self.redis.hmget(self.redis_keys.chat_buckets(shard), fields)
            for i, iid in enumerate(unknown):
                self.layouts[(shard, iid)] = bucket_count(values[2 * i])
                self.entries[(shard, iid)] = int(values[2 * i + 1] or 0)
        out = {}
        earlier = before or {}
        for iid, count in counts.items():
            n = self.layouts.get((shard, iid), 1)
            could_hold = self.entries[(shard, iid)] + count + earlier.get(iid, 0)
            # (One bucket alone may fill to twice as much: tiny integrations stay one key.)
            if could_hold > SPLIT_AT * max(n, 2):
                n = max(n, -(-could_hold // BUCKET_LOAD))
            out[iid] = n
        return out, counts

    def _realize(self, shard: int, planned: Planned) -> bool:
        """Split buckets up to the counts the plan places chats with; False if another worker
        split further meanwhile (plan again)."""
        plan, layouts = planned[1], planned[2]
        wanted = {plan[i]: plan[i + 1] for i in range(0, 2 * layouts, 2)}
        short = {iid: n for iid, n in wanted.items() if self.layouts.get((shard, iid), 1) < n}
        if short:
            self.split_to(shard, short)
        return all(self.layouts.get((shard, iid), 1) == n for iid, n in wanted.items())

    def _plan(
        self,
        shard: int,
        entries: list[Any],
        extra: list[str],
        parking: str,
        parked: str,
        before: dict[str, int] | None = None,
    ) -> Planned:
        """The tags of the keys the entries need and the apply script's plan: each
        integration's bucket count, then per entry its id and the KEYS indexes of its chat's
        bucket and its day's counts (0: none). (The drain's hot loop: kept lean.)"""
        index: dict[Any, int] = {}
        tags: list[str] = []

        def key_index(tag: str) -> int:
            at = index.get(tag)
            if at is None:
                tags.append(tag)
                at = index[tag] = FIXED_KEYS + len(tags)  # 1-based, as in Lua's KEYS
            return at

        for tag in extra:
            key_index(tag)
        if parked:
            for letter in ("g", "qi", "qs", "pg", "pr"):
                key_index(f"{letter}|{parked}")
        events = [_event(fields) for _, fields in entries]
        layouts, counts = self.layouts_for(shard, events, before)
        per_entry: list[int] = []  # bucket and day KEYS indexes of each entry
        add = per_entry.extend
        hashes = self._hashes  # a chat's events come close together: hash it once
        if len(hashes) > HASHES_KEPT:
            hashes.clear()
        # Per integration only what its events use: group names when an event has a group
        # (or takes one from its assignment), queues when one counts. (Parking keys come
        # when an event needs them: the script asks.)
        named: set[str] = set()
        counted: set[str] = set()
        for event in events:
            bucket = day = 0
            if event is not None:
                iid, chat, kind, t, _ = event
                n = layouts[iid]
                if iid not in named and (event[4] or kind == Kind.SOLVED_GROUP_UNNAMED):
                    named.add(iid)
                    key_index(f"g|{iid}")
                if iid not in counted and kind in TERMINAL:
                    counted.add(iid)
                    key_index(f"qi|{iid}")
                    key_index(f"qs|{iid}")
                    # Days its chats moved out of lately: likely again (saves a pass).
                    for moved in self.moved_from.get((shard, iid), ()):
                        key_index(moved)
                h = hashes.get(chat)
                if h is None:
                    h = hashes[chat] = chat_hash(chat)
                b = place(h, n)
                bucket = index.get((iid, b)) or 0
                if not bucket:
                    bucket = index[(iid, b)] = key_index(f"s|{iid}|{b}")
                if kind in TERMINAL and type(t) is int:
                    d = t // DAY_MS
                    day = index.get((iid, -d)) or 0
                    if not day:
                        day = index[(iid, -d)] = key_index(f"n|{iid}|{d}")
            add((bucket, day))
        plan = [x for iid, n in layouts.items() for x in (iid, n)]
        if entries:  # the entries it was planned for, then one string for the indexes
            plan += [entries[0][0], entries[-1][0], ",".join(map(str, per_entry))]
        return tags, plan, len(layouts), self._named(shard, tags), counts

    def split_to(self, shard: int, targets: dict[str, int]) -> None:
        """Split integrations' chat buckets until each has its target count (never fewer
        than it has), several integrations and splits per call."""
        source = self.redis_keys.stream(shard)
        key = self.redis_keys.chat_buckets(shard)
        left = dict(targets)
        while left:
            tags: list[str] = []
            triples: list[Any] = []
            budget = SPLITS_PER_CALL
            for iid, target in left.items():
                n = self.layouts.get((shard, iid), 1)
                low = 1 << (n.bit_length() - 1)
                k = min(target - n, 2 * low - n, budget)  # within the round (n < 2^(L+1))
                if k <= 0:
                    break
                tags += [f"s|{iid}|{b}" for j in range(k) for b in (n + j - low, n + j)]
                triples += [iid, n, k]
                budget -= k
            reply = self.run_script(shard, source, "split", [], tags, triples)
            for i, now in enumerate(reply):
                iid = triples[3 * i]
                n = int(now) or bucket_count(self.redis.hget(key, iid))  # another split first
                self.layouts[(shard, iid)] = n
                if n >= left[iid]:
                    del left[iid]

    def release(self, shard: int, start: str) -> bool:
        """Drop the drain flag unless entries arrived past `start`; True if more to do."""
        keys = [self.redis_keys.stream(shard), self.redis_keys.drain_flag(shard)]
        return bool(retrying(lambda: self._end_drain(keys=keys, args=[start])))

    def hold(self, shard: int) -> None:
        """(Re)take the drain flag's lease while this drain runs."""
        lease_ms = int(self.settings.drain_lease_seconds * 1000)
        key = self.redis_keys.drain_flag(shard)
        retrying(lambda: self.redis.set(key, "1", px=lease_ms))
