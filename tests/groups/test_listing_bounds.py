"""Freshchat is asked within bounds (§5): one listing per integration at a time across
worker processes (a Redis lock), listing pages counted toward the per-minute cap, and a
time budget per resolve() call."""

from __future__ import annotations

import threading

import httpx
import pytest
import redis

from app.settings import Settings
from tests.freshchat_standin import FreshchatStandIn
from tests.group_support import (
    PAGES,
    T0,
    Clock,
    add_integration,
    calls,
    group_map,
)
from tests.redis_server import RedisServer
from workers import groups
from workers.groups import GroupResolver


def test_a_listing_in_flight_elsewhere_is_not_repeated(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    lock = resolver.redis_keys.group_list_lock(shard, iid)
    r.set(lock, "other-worker", px=5000)
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g2")]) is False
    assert fc.requests == []
    assert r.get(lock) == b"other-worker"  # not ours to drop
    # The other worker's listing named them meanwhile: learnt without a call.
    r.hset(resolver.redis_keys.groups(shard, iid), "g1", groups.positive_entry("X", T0))
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    assert fc.requests == []


def test_concurrent_resolvers_make_one_listing(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, redis_server: RedisServer
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.slow(0.1)
    needs = [(iid, gid) for gid in ("g1", "g2", "g3", "gone", "q100", "gone2")] * 50
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker(n: int) -> None:
        conn = redis_server.client()
        with httpx.Client(timeout=httpx.Timeout(2.0)) as client:
            resolver = GroupResolver(conn, settings, client=client)
            barrier.wait()
            results.append(resolver.resolve(shard, needs[n:] + needs[:n]))
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fc.listed_pages() == PAGES  # exactly one listing: one GET per page
    assert fc.group_gets() == []
    named = group_map(r, settings, shard, iid)
    assert named["g3"] == "Sales: EMEA 🚀".encode() and named["q100"] == b"Queue 100"
    assert named["gone"].startswith(b"\0") and named["gone2"].startswith(b"\0")
    assert len(results) == 8 and results.count(True) >= 1
    assert calls(r, settings) == {"ok": 3}


def test_listing_pages_count_toward_the_per_minute_cap(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(groups, "MAX_CALLS_PER_MINUTE", 3)
    unspaced = settings.model_copy(update={"group_list_every_seconds": 0})  # the cap alone
    iid, shard = add_integration(settings, fc.domain)
    other, other_shard = add_integration(settings, fc.domain, name="Other")
    clock.now = T0 - T0 % 60  # the start of a minute
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        resolver = GroupResolver(r, unspaced, client=client, clock=clock)
        assert resolver.resolve(shard, [(iid, "g1")]) is True  # 3 pages: the cap is reached
        assert resolver.resolve(shard, [(iid, "gnew")]) is False  # waits for the next minute
        assert len(fc.requests) == 3
        assert resolver.resolve(other_shard, [(other, "g1")]) is True  # others unaffected
        assert len(fc.requests) == 6
        clock.now += 60
        assert resolver.resolve(shard, [(iid, "gnew")]) is True
    assert len(fc.requests) == 9
    assert group_map(r, settings, shard, iid)["gnew"].startswith(b"\0")


def test_time_budget_leaves_other_integrations_for_the_next_drain(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    other, _ = add_integration(settings, fc.domain, name="Other")
    fc.slow(0.05)
    resolver.budget_s = 0.1
    assert resolver.resolve(shard, [(iid, "g1"), (other, "g1")]) is True
    assert fc.listed_pages() == PAGES  # one integration's listing, then the budget was spent
