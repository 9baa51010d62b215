"""Group names from Freshchat's paginated group list (§5) against a stand-in Freshchat and a
real Redis: one listing names every group, listings are bounded (one at a time, one per
interval, per integration), negatives only after a complete listing, backoff on failures.
Concurrency and caps: tests/groups/test_listing_bounds.py; conversation lookups:
tests/groups/test_listing_conversations.py; the drain path: tests/groups/test_listing_drain.py."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
import redis

from app.integration import IntegrationChanges
from app.settings import Settings
from tests.freshchat_standin import FreshchatStandIn, refused_domain
from tests.group_support import (
    GOOD,
    PAGES,
    T0,
    Clock,
    add_integration,
    all_named,
    backoff,
    calls,
    group_map,
    integrations_call,
)
from workers import groups
from workers.groups import GroupResolver

# One listing names every group.


def test_one_listing_names_every_group(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g1"), (iid, "g3")]) is True
    assert group_map(r, settings, shard, iid) == all_named()
    assert fc.listed_pages() == PAGES
    assert all(q.query["items_per_page"] == ["50"] for q in fc.requests)
    assert all(q.authorization == f"Bearer {GOOD}" for q in fc.requests)
    assert fc.group_gets() == []  # never the per-id route
    assert calls(r, settings) == {"ok": 3}  # one per page
    raw = r.hget(resolver.redis_keys.groups(shard, iid), "g3")
    assert raw == f"\1{int(T0) + groups.POSITIVE_TTL_S}\1Sales: EMEA 🚀".encode()
    # Every listed group is named now: another id of the listing makes no call.
    assert resolver.resolve(shard, [(iid, "g4"), (iid, "q119")]) is True
    assert len(fc.requests) == 3
    assert r.exists(resolver.redis_keys.group_list_lock(shard, iid)) == 0


def test_a_second_need_within_the_interval_waits_for_the_next_listing(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    fc.script.groups["gnew"] = "Created just now"  # after the listing
    clock.now += settings.group_list_every_seconds - 1
    assert resolver.resolve(shard, [(iid, "gnew"), (iid, "gone")]) is False
    assert len(fc.requests) == 3  # no call within the interval...
    assert "gnew" not in group_map(r, settings, shard, iid)  # ...and nothing guessed
    assert "gone" not in group_map(r, settings, shard, iid)
    clock.now += 1
    assert resolver.resolve(shard, [(iid, "gnew"), (iid, "gone")]) is True
    assert fc.listed_pages() == PAGES + PAGES
    assert group_map(r, settings, shard, iid)["gnew"] == b"Created just now"
    assert group_map(r, settings, shard, iid)["gone"].startswith(b"\0")
    assert fc.group_gets() == []


def test_an_id_absent_from_a_complete_listing_is_negative_until_its_ttl(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "gone"), (iid, "g2")]) is True
    marker = b"\0" + str(int(T0) + groups.NEGATIVE_TTL_S).encode()
    assert group_map(r, settings, shard, iid) == all_named({"gone": marker})
    clock.now += groups.NEGATIVE_TTL_S - 1
    assert resolver.resolve(shard, [(iid, "gone")]) is True  # cached: no call
    assert len(fc.requests) == 3
    # After the TTL, Freshchat is asked again; the group exists by now.
    fc.script.groups["gone"] = "Returns"
    clock.now += 1
    assert resolver.resolve(shard, [(iid, "gone")]) is True
    assert group_map(r, settings, shard, iid)["gone"] == b"Returns"
    assert fc.listed_pages() == PAGES + PAGES


def test_a_name_from_freshchat_is_refreshed_after_its_ttl(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver, clock: Clock
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    fc.script.groups["g1"] = "Customer Care"  # renamed in Freshchat
    clock.now += groups.POSITIVE_TTL_S - 1
    assert resolver.resolve(shard, [(iid, "g1")]) is True  # still fresh: no call
    assert len(fc.requests) == 3
    clock.now += 2
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    assert group_map(r, settings, shard, iid)["g1"] == b"Customer Care"
    assert len(fc.requests) == 6


def test_a_name_an_event_carried_needs_no_listing(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    r.hset(resolver.redis_keys.groups(shard, iid), "g9", "From an event")
    assert resolver.resolve(shard, [(iid, "g9")]) is True
    assert fc.requests == []


# Failures: nothing written, backoff, Retry-After honoured.


def test_a_failure_on_page_2_writes_nothing_and_honours_retry_after(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.fail_page(2, 429, retry_after="90")
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "gone")]) is False
    assert group_map(r, settings, shard, iid) == {}  # no names of page 1, no negative
    assert fc.listed_pages() == [1, 2]
    assert calls(r, settings) == {"ok": 1, "rate_limited": 1}
    state = backoff(r, resolver, shard, iid)
    assert (float(state["at"]), state["o"]) == (T0 + 90, "rate_limited")
    clock.now += 89  # past the listing interval, not past Retry-After
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "gone")]) is False
    assert len(fc.requests) == 2
    clock.now += 2
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "gone")]) is True
    assert fc.listed_pages() == [1, 2, *PAGES]
    named = group_map(r, settings, shard, iid)
    assert named.pop("gone") == b"\0" + str(int(clock.now) + groups.NEGATIVE_TTL_S).encode()
    assert named == all_named()
    assert backoff(r, resolver, shard, iid) == {}


def test_retry_after_as_http_date(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    resolver.clock = time.time
    iid, shard = add_integration(settings, fc.domain)
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    fc.fail_next(503, retry_after=when)
    assert resolver.resolve(shard, [(iid, "g1")]) is False
    wait = float(backoff(r, resolver, shard, iid)["at"]) - time.time()
    assert 110 < wait <= 121


def test_5xx_backs_off_exponentially_then_recovers(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, clock: Clock
) -> None:
    unspaced = settings.model_copy(update={"group_list_every_seconds": 0})  # backoff alone
    iid, shard = add_integration(settings, fc.domain)
    fc.fail_always(500)
    need = [(iid, "g1")]
    calls_at: list[float] = []
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        resolver = GroupResolver(r, unspaced, client=client, clock=clock)
        for _ in range(400):  # 200 simulated seconds, a drain every half second
            before = len(fc.requests)
            assert resolver.resolve(shard, need) is False
            if len(fc.requests) > before:
                calls_at.append(clock.now - T0)
            clock.now += 0.5
        assert calls_at == [0, 1, 3, 7, 15, 31, 63, 127]  # delays 1, 2, 4, ... seconds
        assert group_map(r, settings, shard, iid) == {}
        # The delay is capped at five minutes.
        r.hset(resolver.redis_keys.group_backoff(shard, iid), mapping={"at": "0", "d": "300"})
        resolver.resolve(shard, need)
        state = backoff(r, resolver, shard, iid)
        assert float(state["d"]) == groups.BACKOFF_MAX_S
        assert float(state["at"]) == clock.now + groups.BACKOFF_MAX_S
        # Freshchat recovers: the next try after the delay succeeds and resets the backoff.
        fc.recover()
        clock.now += groups.BACKOFF_MAX_S
        assert resolver.resolve(shard, need) is True
    assert group_map(r, settings, shard, iid) == all_named()
    assert backoff(r, resolver, shard, iid) == {}


def test_failed_listings_are_spaced_by_the_interval_too(
    settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver, clock: Clock
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.fail_always(503)
    calls_at: list[float] = []
    for _ in range(400):  # 200 simulated seconds: backoff (1, 2, 4 s) alone would ask 8 times
        before = len(fc.requests)
        resolver.resolve(shard, [(iid, "g1")])
        if len(fc.requests) > before:
            calls_at.append(clock.now - T0)
        clock.now += 0.5
    assert calls_at == [0, 60, 120, 180]


def test_backoff_is_shared_by_worker_processes(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.fail_next(503, retry_after="90")
    assert resolver.resolve(shard, [(iid, "g1")]) is False
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        restarted = GroupResolver(r, settings, client=client, clock=clock)
        clock.now += 89
        assert restarted.resolve(shard, [(iid, "g1"), (iid, "g2")]) is False
        assert len(fc.requests) == 1
        clock.now += 2
        assert restarted.resolve(shard, [(iid, "g1"), (iid, "g2")]) is True
    assert len(fc.requests) == 1 + len(PAGES)


def test_connection_refused_backs_off(
    r: redis.Redis, settings: Settings, resolver: GroupResolver, clock: Clock
) -> None:
    iid, shard = add_integration(settings, refused_domain())
    assert resolver.resolve(shard, [(iid, "g1")]) is False
    assert group_map(r, settings, shard, iid) == {}
    state = backoff(r, resolver, shard, iid)
    assert (float(state["at"]), state["o"]) == (T0 + groups.BACKOFF_START_S, "network_error")
    assert calls(r, settings) == {"network_error": 1}


def test_slow_freshchat_times_out_and_backs_off(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, clock: Clock
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.slow(5.0)
    with httpx.Client(timeout=httpx.Timeout(0.2)) as client:
        resolver = GroupResolver(r, settings, client=client, clock=clock)
        began = time.monotonic()
        assert resolver.resolve(shard, [(iid, "g1"), (iid, "g2")]) is False
        assert time.monotonic() - began < 1.5  # one timeout, then the integration waits
    assert len(fc.requests) == 1
    assert group_map(r, settings, shard, iid) == {}
    assert backoff(r, resolver, shard, iid)["o"] == "network_error"


def test_rejected_key_backs_off_until_the_admin_fixes_it(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    iid, shard = add_integration(settings, fc.domain, key="fc-old-key")
    assert resolver.resolve(shard, [(iid, "g1")]) is False  # 401
    assert backoff(r, resolver, shard, iid)["o"] == "unauthorized"  # app.state: key rejected
    fc.fail_next(403)
    clock.now += settings.group_list_every_seconds
    assert resolver.resolve(shard, [(iid, "g1")]) is False  # 403
    assert backoff(r, resolver, shard, iid)["o"] == "unauthorized"
    assert group_map(r, settings, shard, iid) == {}  # never a negative marker for these
    clock.now += 1
    assert resolver.resolve(shard, [(iid, "g1")]) is False  # still backing off: no call
    assert len(fc.requests) == 2
    integrations_call(settings, "update", iid, IntegrationChanges(freshchat_api_key=GOOD), None)
    # A new key: backoff and listing interval start over, the listing runs at once.
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    assert group_map(r, settings, shard, iid) == all_named()
    assert [q.authorization for q in fc.requests] == [
        "Bearer fc-old-key",
        "Bearer fc-old-key",
        *[f"Bearer {GOOD}"] * len(PAGES),
    ]
    assert calls(r, settings) == {"unauthorized": 2, "ok": 3}
    assert "unauthorized" in caplog.text
    assert "fc-old-key" not in caplog.text and GOOD not in caplog.text


def test_unknown_or_deleted_integration_gets_negative_markers(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    integrations_call(settings, "delete", iid)
    assert resolver.resolve(shard, [(iid, "g1"), ("nosuchint0", "g1")]) is True
    assert group_map(r, settings, shard, iid)["g1"].startswith(b"\0")
    assert group_map(r, settings, shard, "nosuchint0")["g1"].startswith(b"\0")
    assert fc.requests == []
