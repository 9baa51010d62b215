"""Freshness with a stuck integration (§10, §8): integration B on the same shard as an
integration S whose events all wait for group names Freshchat cannot give (the stand-in
answers 503), B at 1,000 events/s; B's event -> count and `applied_through` lag, against
the same run with none of S's events waiting.

S's events go in through the product's own storage path (the group commit and the ingest
script, 500 to a request) before the web process and the worker start; the worker meets
them first. B's load starts once the worker has taken S's events out of the shard's stream
(parked), or has stopped making progress with them, or a time limit passed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis as SyncRedis

from app.auth import hash_key
from app.commit import GroupCommit, Write
from app.compact import Compact, Kind, chat_key
from app.jobs import enqueue_drain
from app.lua import SLOT_MS, Stored
from app.redis_client import async_data_client, data_client
from app.redis_keys import RedisKeys
from app.settings import Settings
from bench.common import (
    GROUPS,
    PY,
    Row,
    Tenant,
    bench_settings,
    body_template,
    cpu_seconds,
    create_tenant,
    fmt_ms,
    log,
    private_redis,
    process_env,
    running,
    uuid_of,
)
from bench.freshness import _client, _iso
from bench.ingest import RATE, serve
from tests.freshchat_standin import FreshchatStandIn
from tests.freshchat_standin import running as freshchat_standin
from tests.support import READER_TOKEN

REQUEST = 500  # S's events per stored request
UNKNOWN_GROUPS = 20  # group ids S's events name, none of them known


@dataclass(frozen=True)
class Case:
    """B's freshness and lag in one run, with S's state around it."""

    waiting: int
    result: dict[str, Any]
    settle_s: float
    before: tuple[int, int]  # (S's events in the shard stream, parked) when B's load starts
    after: tuple[int, int]
    worker_cpu_pct: float
    freshchat_calls: int


def fill(settings: Settings, stuck: Tenant, count: int, time_ms: int) -> None:
    """Store `count` of S's terminal events naming unknown groups, as the endpoint does."""
    sync = data_client(settings)
    rng = random.Random(count)
    key_hash = hash_key(stuck.api_key)

    async def go() -> None:
        redis = async_data_client(settings)
        commit = GroupCommit(redis, settings, lambda shard: None)
        try:
            for first in range(0, count, REQUEST * 20):
                writes = []
                for start in range(first, min(first + REQUEST * 20, count), REQUEST):
                    events = [
                        Compact(
                            chat_key(uuid_of(rng)),
                            Kind.SOLVED,
                            time_ms - rng.randrange(3_600_000),
                            f"9{rng.randrange(UNKNOWN_GROUPS):07d}",
                            "",
                        ).encode(stuck.iid)
                        for _ in range(min(REQUEST, count - start))
                    ]
                    writes.append(
                        Write(stuck.shard, stuck.iid, key_hash, events, "0:" + "u" * len(events))
                    )
                outcomes = await asyncio.gather(*(commit.store(w) for w in writes))
                refused = [o for o in outcomes if o.stored is not Stored.OK]
                if refused:
                    raise RuntimeError(f"stuck: S's events not stored: {refused[0]}")
        finally:
            await redis.aclose()

    asyncio.run(go())
    enqueue_drain(sync, settings, stuck.shard)
    sync.close()


def same_shard_tenant(settings: Settings, shard: int) -> Tenant:
    """A new integration that the product puts on `shard` (its id decides: crc32 % SHARDS)."""
    for n in range(200):
        tenant = create_tenant(settings, f"Busy Co {n}")
        if tenant.shard == shard:
            return tenant
    raise RuntimeError(f"no integration landed on shard {shard} in 200 tries")


def _lengths(redis: SyncRedis, keys: RedisKeys, stuck: Tenant) -> tuple[int, int]:
    stream, parked = keys.stream(stuck.shard), keys.parked(stuck.shard, stuck.iid)
    return int(redis.xlen(stream)), int(redis.xlen(parked))


def settle(redis: SyncRedis, keys: RedisKeys, stuck: Tenant, limit_s: float) -> float:
    """Wait until S's events left the shard's stream or stopped moving; seconds waited."""
    began = last_change = time.monotonic()
    last = _lengths(redis, keys, stuck)
    while time.monotonic() - began < limit_s:
        time.sleep(0.5)
        now = _lengths(redis, keys, stuck)
        if now[0] == 0:
            break
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > 10:
            break
    return time.monotonic() - began


@contextmanager
def failing_freshchat() -> Iterator[FreshchatStandIn]:
    """A Freshchat stand-in that answers every request 503."""
    with freshchat_standin() as standin:
        standin.fail_always(503)
        yield standin


def run_case(quick: bool, time_ms: int, waiting: int) -> Case:
    """One run: fresh Redis, web and worker; S with `waiting` events, B at RATE/s."""
    seconds = 5.0 if quick else 15.0
    with failing_freshchat() as standin, private_redis() as server:
        assert server.proc is not None
        settings = bench_settings(server.url, freshchat_allow_insecure=True)
        stuck = create_tenant(settings, "Stuck Co", domain=standin.domain)
        busy = same_shard_tenant(settings, stuck.shard)
        redis, keys = server.client(), RedisKeys(settings.key_prefix)
        if waiting:
            log(f"stuck: storing {waiting:,} events of S that wait for group names")
            fill(settings, stuck, waiting, time_ms)
        worker_args = [PY, "-m", "app.cli", "worker"]
        with (
            serve("real", settings) as (port, _),
            running(worker_args, process_env(settings), "worker") as worker,
        ):
            log("stuck: waiting for the worker to meet S's events")
            settle_s = settle(redis, keys, stuck, 60.0 if quick else 300.0) if waiting else 0.0
            before = _lengths(redis, keys, stuck)
            slot = time_ms // SLOT_MS * SLOT_MS
            read_path = (
                f"/v1/integrations/{busy.iid}/contacts?from={_iso(slot)}"
                f"&to={_iso(slot + SLOT_MS)}&interval=15"
            )
            warm = {
                "templates": [list(body_template("assigned", time_ms, GROUPS[0]))],
                "duration_s": 2.0,
            }
            log(f"stuck: B at {RATE}/s for {seconds:g} s ({waiting:,} of S's events waiting)")
            _client(port, busy.api_key, 1, warm)
            cpu0 = cpu_seconds(worker.pid)
            result, _, wall = _client(
                port,
                busy.api_key,
                2,
                {
                    "templates": [list(body_template("resolved", time_ms, GROUPS[1]))],
                    "duration_s": seconds,
                    "read_path": read_path,
                    "reader_token": READER_TOKEN,
                    "poll_interval_s": 0.02,
                    "settle_s": 30.0,
                },
            )
            worker_cpu = 100 * (cpu_seconds(worker.pid) - cpu0) / wall
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            after = _lengths(redis, keys, stuck)
        calls = len(standin.requests)
    return Case(waiting, result, settle_s, before, after, worker_cpu, calls)


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """The same run without and with S's events waiting."""
    waiting = 20_000 if quick else 1_000_000
    base = run_case(quick, time_ms, 0)
    stuck = run_case(quick, time_ms, waiting)
    notes = [_note(c) for c in (base, stuck)]
    return _rows(base, stuck), notes


def _note(case: Case) -> str:
    r = case.result
    return (
        f"{case.waiting:,} of S's events waiting: B sent {r['sent']:,} at"
        f" {r['achieved_rate']:,.0f}/s, {r['statuses']}; {r['polls']} polls"
        f" ({r['poll_errors']} failed), {r['fresh_missing']} events never seen counted;"
        f" S's events in the shard stream / parked: {case.before[0]:,} / {case.before[1]:,}"
        f" when B started ({case.settle_s:.0f} s after the worker did),"
        f" {case.after[0]:,} / {case.after[1]:,} at the end; worker CPU"
        f" {case.worker_cpu_pct:.0f}% of a core; Freshchat stand-in asked"
        f" {case.freshchat_calls} times (503 each)"
    )


def _rows(base: Case, stuck: Case) -> list[Row]:
    b, s = base.result, stuck.result
    waiting = f"{stuck.waiting:,.0f}" if stuck.waiting < 10**6 else "10^6"
    fresh_ok = s["fresh_p99_ms"] <= 1000 and not s["fresh_missing"]
    value = fmt_ms(s["fresh_p99_ms"])
    if s["fresh_missing"]:
        value = f"{s['fresh_missing']:,} never counted"
    return [
        Row(
            f"Freshness, S stuck on B's shard ({waiting} wait)",
            value,
            f"none waiting {fmt_ms(b['fresh_p99_ms'])}",
            _ratio(s["fresh_p99_ms"], b["fresh_p99_ms"]),
            "<= 1 s",
            fresh_ok,
        ),
        Row(
            "  B's applied_through lag p99",
            fmt_ms(s["lag_p99_ms"]),
            f"none waiting {fmt_ms(b['lag_p99_ms'])}",
            _ratio(s["lag_p99_ms"], b["lag_p99_ms"]),
            "<= 1 s",
            s["lag_p99_ms"] <= 1000,
        ),
        Row(
            "  B's p50 / max event -> count",
            f"{fmt_ms(s['fresh_p50_ms'])} / {fmt_ms(s['fresh_max_ms'])}",
            f"none {fmt_ms(b['fresh_p50_ms'])} / {fmt_ms(b['fresh_max_ms'])}",
        ),
    ]


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.1f}x" if baseline > 0 else ""
