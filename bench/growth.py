"""Growth: processing cost per event at 10^4 vs 10^6 tracked chats, 1 vs 1,000 integrations."""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass

import orjson
from redis import Redis

from app.chat_state import BUCKET_LOAD, TOUCH_DAYS
from app.compact import Compact, Kind
from app.redis_keys import RedisKeys
from app.settings import Settings
from bench.common import (
    GROUPS,
    Row,
    bench_settings,
    log,
    mixed_compacts,
    private_redis,
    run_drain,
    stream_key,
    xadd_all,
)
from tests.redis_server import RedisServer

SHARD = 0
EPOCH_MS = 1577836800000  # workers/apply.lua EPOCH
QBITS = 4096  # workers/apply.lua QBITS
FLAT = 1.3  # "flat": at most 30 % dearer per event (shared machine noise is ~±15 %)

# Writes pre-populated chat states exactly as apply.lua keeps them (queue id 1, why digit
# 1, touched today) into `n` chat buckets placed as `app.chat_state.bucket_of` places them.
POPULATE = """
local bucket_key, first, last, value = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = tonumber(ARGV[5])
local low = 1
while low * 2 <= n do low = low * 2 end
for i = first, last do
  local chat = string.format('pre%019d', i)
  local h = tonumber(string.sub(redis.sha1hex(chat), 1, 7), 16)
  local b = h % (low * 2)
  if b >= n then b = h % low end
  redis.call('HSET', bucket_key .. b, chat, value)
end
return last - first + 1
"""


def shard_of(settings: Settings, iid: str, sharded: bool) -> int:
    """The integration's shard as the product assigns it (crc32 % SHARDS), or 0."""
    return zlib.crc32(iid.encode()) % settings.shards if sharded else SHARD


def feed(redis: Redis, settings: Settings, encoded: list[bytes], sharded: bool) -> list[int]:
    """XADD each event to its integration's shard stream; the shards used."""
    by_shard: dict[int, list[bytes]] = defaultdict(list)
    for raw in encoded:
        by_shard[shard_of(settings, orjson.loads(raw)[0], sharded)].append(raw)
    for shard, events in by_shard.items():
        xadd_all(redis, stream_key(settings, shard), events)
    return sorted(by_shard)


def populate(
    redis: Redis, settings: Settings, iids: list[str], per_iid: int, time_ms: int, sharded: bool
) -> None:
    """`per_iid` tracked chats for each integration, written in server-side chunks."""
    touched = f"{int(time.time()) // 86_400 % TOUCH_DAYS:02d}"
    value = str((time_ms - EPOCH_MS) * QBITS + 1) + "1" + touched
    n = max(1, -(-per_iid // BUCKET_LOAD))
    script = redis.register_script(POPULATE)
    keys = RedisKeys(settings.key_prefix)
    for iid in iids:
        shard = shard_of(settings, iid, sharded)
        prefix = keys.chat_bucket(shard, iid, 0)[:-1]
        for first in range(0, per_iid, 100_000):
            last = min(per_iid, first + 100_000) - 1
            script(args=[prefix, first, last, value, n])
        redis.hset(keys.chat_buckets(shard), mapping={iid: n, iid + "#": per_iid})


def warm_up(iids: list[str], start_ms: int) -> list[bytes]:
    """Make every integration known: its group names, queue ids and first/last intervals.

    Two terminal events per integration and group, just outside the measured window, so
    the timed batches measure steady state rather than each integration's first events.
    """
    out: list[bytes] = []
    for iid in iids:
        for gid, gname in GROUPS:
            for t in (start_ms - 900_000, start_ms + 86_400_000 + 1_800_000):
                chat = f"warm{len(out):018d}"
                out.append(
                    Compact(
                        chat=chat, kind=Kind.SOLVED, time_ms=t, group_id=gid, group_name=gname
                    ).encode(iid)
                )
    return out


@dataclass
class Case:
    """One configuration with its own Redis, populated and warmed up."""

    label: str
    iids: list[str]
    per_iid: int
    sharded: bool
    settings: Settings
    redis: Redis
    runs: list[float]


def prepare(
    server: RedisServer, label: str, iids: list[str], chats: int, time_ms: int, sharded: bool
) -> Case:
    """Pre-populate the tracked chats and warm every integration up."""
    settings = bench_settings(server.url)
    redis = server.client()
    per_iid = chats // len(iids)
    populate(redis, settings, iids, per_iid, time_ms - 86_400_000, sharded)
    warm = warm_up(iids, time_ms - 2 * 86_400_000)
    run_drain(settings, feed(redis, settings, warm, sharded), len(warm))
    return Case(label, iids, per_iid, sharded, settings, redis, [])


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """Four Redis servers side by side; drains of the same mix take turns; best of each."""
    n, reps = (50_000, 2) if quick else (150_000, 3)
    one = ["acme000001"]
    many = [f"tenant{i:04d}" for i in range(1000)]
    plan = [
        ("10^4 chats, 1 integration", one, 10_000, True),
        ("10^6 chats, 1 integration", one, 1_000_000, True),
        ("10^4 chats, 1,000 integrations on 8 shards", many, 10_000, True),
        ("10^4 chats, 1,000 integrations on 1 shard", many, 10_000, False),
    ]
    with ExitStack() as stack:
        cases = []
        for label, iids, chats, sharded in plan:
            log(f"growth: preparing {label}")
            server = stack.enter_context(private_redis())
            cases.append(prepare(server, label, iids, chats, time_ms, sharded))
        for rep in range(reps):
            log(f"growth: round {rep + 1} of {reps}, {n:,} events per case")
            for case in cases:
                start_ms = time_ms - 2 * 86_400_000
                batch = mixed_compacts(n, case.iids, 500 + rep, start_ms, existing=case.per_iid)
                shards = feed(case.redis, case.settings, batch, case.sharded)
                run = run_drain(case.settings, shards, n)
                case.runs.append(1e6 * run.seconds / n)
    small, large, spread, one_shard = (min(c.runs) for c in cases)
    notes = [
        "growth: same mixed stream (a quarter of events touch already tracked chats); the"
        " four cases on four Redis servers take turns, best of each; chats pre-populated in"
        " apply.lua's chat buckets; every integration warmed up first (group names, queue ids,"
        " first/last interval known); integrations on their own shards (crc32 % SHARDS=8) as the"
        " product assigns them, drained by one process; the 1-shard row is the worst case",
        *(
            f"growth {c.label}: " + ", ".join(f"{x:.1f}" for x in c.runs) + " us/event"
            for c in cases
        ),
    ]
    rows = [
        Row(
            "Cost per event, 10^6 vs 10^4 chats",
            f"{large:.1f} us",
            f"{small:.1f} us",
            f"{large / small:.2f}x",
            f"flat (<= {FLAT}x)",
            large / small <= FLAT,
        ),
        Row(
            "Cost per event, 1,000 vs 1 integrations",
            f"{spread:.1f} us",
            f"{small:.1f} us",
            f"{spread / small:.2f}x",
            f"flat (<= {FLAT}x)",
            spread / small <= FLAT,
        ),
        Row(
            "  same, all 1,000 on one shard (worst case)",
            f"{one_shard:.1f} us",
            f"{small:.1f} us",
            f"{one_shard / small:.2f}x",
            "(info)",
        ),
    ]
    return rows, notes
