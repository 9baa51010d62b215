"""Reading contact counts (§6): the day hashes of 15-minute UTC cells rolled up into a
query's intervals, with the revision and `applied_through` of the read; JSON and CSV."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.intervals import Query, bucket_start, iso_in
from app.lua import SLOT_MS, SLOTS_PER_DAY, UNDEFINED_QUEUE
from app.redis_client import shard_transaction
from app.redis_keys import RedisKeys, text


def names_of(raw: dict[Any, Any]) -> dict[int, str]:
    """Queue id -> name, from the integration's queue-names hash."""
    names = {0: UNDEFINED_QUEUE}
    for field, value in raw.items():
        name = text(field)
        if name.startswith("#") and len(name) > 1:
            names[int(name[1:])] = text(value)
    return names


async def queue_names(redis: Redis, keys: RedisKeys, shard: int, iid: str) -> dict[int, str]:
    """Queue id -> name for one integration."""
    return names_of(await redis.hgetall(keys.queue_names(shard, iid)))


Row = tuple[str, str, int]  # interval_start, queue, contacts


@dataclass(frozen=True)
class Snapshot:
    """Rows of one read, with the revision and `applied_through` they are consistent with."""

    revision: str
    applied_through: str
    rows: list[Row]

    def dict_rows(self) -> list[dict[str, Any]]:
        """The rows as `{interval_start, queue, contacts}` objects."""
        return [{"interval_start": i, "queue": q, "contacts": n} for i, q, n in self.rows]


def iso_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def applied_through(oldest: list[list[Any]], now: list[Any]) -> str:
    """Every event stored before this instant is counted: the time (id) of the oldest entry
    still waiting — in the shard's stream or parked for this integration, which keeps its
    arrival id — or Redis's clock when nothing waits."""
    waiting = [int(text(entries[0][0]).split("-")[0]) for entries in oldest if entries]
    if waiting:
        return iso_ms(min(waiting))
    seconds, micros = (int(x) for x in now)
    return iso_ms(seconds * 1000 + micros // 1000)


def aggregate(
    first: int, last: int, per_day: dict[int, dict[Any, Any]], names: dict[int, str], query: Query
) -> list[Row]:
    """Sum the 15-minute cells of slots `first` to `last` (exclusive) into the query's rows.

    A 31-day read of a big customer is ~10^5 cells, so the loops do dictionary lookups
    only: field names repeat every day (parsed once), and (interval, queue) is one integer
    sort key with the queue's rank by name.
    """
    ranked = sorted({*names.values(), UNDEFINED_QUEUE})
    by_name = {name: i for i, name in enumerate(ranked)}
    width = len(ranked)
    cells: dict[bytes, tuple[int, int, str]] = {}  # field -> (slot of day, sort key, queue)
    queue_of: dict[bytes, str] = {}  # queue id -> name, as met in the fields
    for fields in per_day.values():
        for key in fields.keys() - cells.keys():
            slot_of_day, _, qid = key.partition(b":")
            name = queue_of[qid] = names.get(int(qid), UNDEFINED_QUEUE)
            cells[key] = (int(slot_of_day), int(slot_of_day) * width + by_name[name], name)
    if query.interval == 15:
        rows = _quarter_hours(first, last, per_day, cells, query)
        # Two queue ids under one name (an id whose name is missing reads as
        # Undefined_Queue, like id 0) are one row per interval: sum them.
        return _merged(rows) if len(set(queue_of.values())) < len(queue_of) else rows
    bucket_of: dict[int, int] = {}
    totals: dict[int, int] = {}
    for day, fields in per_day.items():
        base = day * SLOTS_PER_DAY
        for key, value in fields.items():
            slot_of_day, _, name = cells[key]
            slot = base + slot_of_day
            if first <= slot < last and query.queue in (None, name):
                bucket = bucket_of.get(slot)
                if bucket is None:
                    start = bucket_start(slot, query.interval, query.zone)
                    bucket = bucket_of[slot] = int(start.timestamp()) * 1000 // SLOT_MS
                at = bucket * width + by_name[name]
                totals[at] = totals.get(at, 0) + int(value)
    labels: dict[int, str] = {}
    for bucket in {at // width for at in totals}:
        labels[bucket] = iso_in(datetime.fromtimestamp(bucket * SLOT_MS / 1000, UTC), query.zone)
    return [
        (labels[at // width], ranked[at % width], n) for at, n in sorted(totals.items()) if n > 0
    ]


def _merged(rows: list[Row]) -> list[Row]:
    """Rows sorted by interval then queue, with neighbours of the same both summed."""
    out: list[Row] = []
    for row in rows:
        if out and out[-1][:2] == row[:2]:
            out[-1] = (row[0], row[1], out[-1][2] + row[2])
        else:
            out.append(row)
    return out


def _quarter_hours(
    first: int,
    last: int,
    per_day: dict[int, dict[Any, Any]],
    cells: dict[bytes, tuple[int, int, str]],
    query: Query,
) -> list[Row]:
    """15-minute rows: every cell is its own row (the same in every zone), so each day's
    fields are only sorted and listed, nothing is summed."""
    order = {key: cell[1] for key, cell in cells.items()}
    rows: list[Row] = []
    for day in sorted(per_day):
        fields, base = per_day[day], day * SLOTS_PER_DAY
        keys = sorted(fields, key=order.__getitem__)
        if not (first <= base and base + SLOTS_PER_DAY <= last) or query.queue is not None:
            keys = [
                k
                for k in keys
                if first <= base + cells[k][0] < last and query.queue in (None, cells[k][2])
            ]
        labels = [
            iso_in(datetime.fromtimestamp((base + s) * SLOT_MS / 1000, UTC), query.zone)
            for s in range(SLOTS_PER_DAY)
        ]
        rows += [(labels[cells[k][0]], cells[k][2], int(fields[k])) for k in keys]
    return rows


async def read_counts(
    redis: Redis, keys: RedisKeys, shard: int, iid: str, query: Query
) -> Snapshot:
    """Rows sorted by interval then queue (no zero rows), read in one transaction with the
    revision and `applied_through` they reflect (§6)."""
    first = int(query.start.timestamp() * 1000) // SLOT_MS
    last = int(query.end.timestamp() * 1000) // SLOT_MS  # exclusive
    days = range(first // SLOTS_PER_DAY, (last - 1) // SLOTS_PER_DAY + 1)

    def fill(pipe: Pipeline) -> None:
        pipe.hget(keys.revisions(shard), "#")
        pipe.xrange(keys.stream(shard), "-", "+", count=1)
        pipe.xrange(keys.parked(shard, iid), "-", "+", count=1)
        pipe.time()
        pipe.hgetall(keys.queue_names(shard, iid))
        for day in days:
            pipe.hgetall(keys.counts(shard, iid, day))

    # Every key carries the shard's hash tag: one slot, one MULTI even on a cluster (§14).
    revision, pending, parked, now, names, *per_day = await shard_transaction(
        redis, keys.revisions(shard), fill
    )
    fields = dict(zip(days, per_day, strict=True))
    rows = aggregate(first, last, fields, names_of(names), query)
    return Snapshot(text(revision or b"0"), applied_through([pending, parked], now), rows)


async def read_queues(redis: Redis, keys: RedisKeys, shard: int, iid: str) -> list[dict[str, Any]]:
    """Every queue seen: first/last interval with a terminal event, and current contacts."""
    names = await queue_names(redis, keys, shard, iid)
    raw = await redis.hgetall(keys.queue_stats(shard, iid))
    stats: dict[int, dict[str, int]] = defaultdict(dict)
    for key, value in raw.items():
        queue_id, _, what = text(key).partition(":")
        stats[int(queue_id)][what] = int(value)
    out = []
    for qid, s in stats.items():
        if "f" not in s:
            continue
        out.append(
            {
                "queue": names.get(qid, UNDEFINED_QUEUE),
                "first_seen": iso_in(datetime.fromtimestamp(s["f"] * SLOT_MS / 1000, UTC), None),
                "last_seen": iso_in(datetime.fromtimestamp(s["l"] * SLOT_MS / 1000, UTC), None),
                "contacts": s.get("n", 0),
            }
        )
    return sorted(out, key=lambda q: q["queue"])


CHUNK_ROWS = 5000  # rows per streamed piece of an answer


def _csv_field(value: str) -> str:
    """One CSV field as the csv module writes it (quoted when it must be)."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_chunks(rows: list[Row]) -> Iterator[bytes]:
    """The rows as CSV with a header line, a piece at a time (queue names quoted once each,
    not once per row: the csv module cost more than the rest of a big read)."""
    yield b"interval_start,queue,contacts\r\n"
    quoted: dict[str, str] = {}
    for at in range(0, len(rows), CHUNK_ROWS):
        lines = []
        for start, queue, n in rows[at : at + CHUNK_ROWS]:
            field = quoted.get(queue)
            if field is None:
                field = quoted[queue] = _csv_field(queue)
            lines.append(f"{start},{field},{n}\r\n")
        yield "".join(lines).encode()


def to_csv(rows: list[Row]) -> str:
    """The rows as CSV with a header line."""
    return b"".join(csv_chunks(rows)).decode()


def json_chunks(head: dict[str, Any], rows: list[Row]) -> Iterator[bytes]:
    """`head` with a `rows` array of `{interval_start, queue, contacts}`, a piece at a time."""
    yield orjson.dumps(head)[:-1] + b',"rows":['
    quoted: dict[str, str] = {}  # queue -> its JSON string, encoded once per queue
    for at in range(0, len(rows), CHUNK_ROWS):
        lines = []
        for start, queue, n in rows[at : at + CHUNK_ROWS]:
            name = quoted.get(queue)
            if name is None:
                name = quoted[queue] = orjson.dumps(queue).decode()
            # `start` is an ISO 8601 time we formatted: nothing in it needs escaping.
            lines.append(f'{{"interval_start":"{start}","queue":{name},"contacts":{n}}}')
        yield (b"," if at else b"") + ",".join(lines).encode()
    yield b"]}"
