"""The changes feed (§6): which 15-minute intervals and queues changed after a revision.

The apply script gives every batch that changed counts the shard's next revision and
scores each changed cell of each of its integrations with it (`RedisKeys.changes`); a cell
keeps only its latest revision, so the feed lists it once however often it moved. A revision
may also grow when only another integration of the shard changed: it is opaque.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.counts import names_of
from app.errors import BadRequest, Gone
from app.intervals import iso_utc
from app.lua import SLOT_MS
from app.redis_client import shard_transaction
from app.redis_keys import RedisKeys, text

_REVISION = re.compile(r"^(0|[1-9][0-9]{0,17})$")


@dataclass(frozen=True)
class Changes:
    """The changed cells after `since`, and the revision that brings a copy up to date."""

    since: str
    revision: str
    changes: list[tuple[str, str]]  # (interval_start, queue), sorted


def parse_revision(value: str | None) -> int:
    """A revision from a query string; BadRequest when it is not one."""
    if value is None or not _REVISION.match(value):
        raise BadRequest(
            "`since` must be a revision as returned in `revision` (e.g. since=42)",
            [{"loc": ["query", "since"], "msg": "not a revision"}],
        )
    return int(value)


async def read_changes(
    redis: Redis, keys: RedisKeys, shard: int, iid: str, since: int, retention_days: int
) -> Changes:
    """Every cell whose count changed after `since`; Gone when that history was dropped."""

    def fill(pipe: Pipeline) -> None:
        pipe.hmget(keys.revisions(shard), ["#", "/f"])
        pipe.zrangebyscore(keys.changes(shard), f"({since}", "+inf")
        pipe.hgetall(keys.queue_names(shard, iid))

    # One slot (the shard's hash tag), so one MULTI even on a cluster (§14).
    (current, floor), cells, names = await shard_transaction(redis, keys.revisions(shard), fill)
    revision = int(current or 0)
    if since > revision:
        raise BadRequest(
            f"`since` is ahead of the current revision ({revision}): "
            "use a revision this integration returned"
        )
    if since < int(floor or 0):
        raise Gone(
            f"changes before revision {int(floor)} are no longer kept "
            f"(CHANGES_RETENTION_DAYS={retention_days}): re-read the whole range, "
            "then follow changes from the revision of that read"
        )
    queue = names_of(names)
    mine = f"{iid}|"
    found = set()
    for member in map(text, cells):
        if member.startswith(mine):
            slot, _, qid = member[len(mine) :].partition(":")
            found.add((int(slot), queue.get(int(qid), "")))
    listed = [
        (iso_utc(datetime.fromtimestamp(slot * SLOT_MS / 1000, UTC)), name)
        for slot, name in sorted(found)
    ]
    return Changes(str(since), str(revision), listed)
