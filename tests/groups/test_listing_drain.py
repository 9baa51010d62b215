"""Group names from Freshchat's list through the real drain job (`workers.drain.drain`,
served with a Drainer as the worker serves it): exact counts, one listing for many events
and batches, ids absent from the listing in Undefined_Queue (why digit 6), and events that
wait, parked, while Freshchat is down or the listing interval runs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis

import workers.drain
from app.compact import Compact, Kind, chat_key
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.chat_support import assignment, chat_state
from tests.freshchat_standin import FreshchatStandIn, running
from tests.group_support import GOOD, GROUPS, PAGES, add_integration, calls
from tests.redis_server import RedisServer, free_port
from tests.support import at, counts, make_settings, waiting
from workers import groups
from workers.applier import Applier
from workers.drain import Drainer
from workers.groups import GroupResolver

LISTED = GROUPS | {"gbig": "Customer Support"}


@pytest.fixture
def settings(redis_server: RedisServer, r: redis.Redis) -> Settings:
    # One listing a second: the tests wait for the interval in real time.
    return make_settings(
        redis_server.url, freshchat_allow_insecure=True, group_list_every_seconds=1.0
    )


@pytest.fixture
def fc() -> Iterator[FreshchatStandIn]:
    with running() as standin:
        standin.script.valid_keys = {GOOD}
        standin.script.groups = dict(LISTED)
        yield standin


def solved(chat: str, time_ms: int, gid: str, name: str = "") -> bytes:
    return Compact(
        chat=chat, kind=Kind.SOLVED, time_ms=time_ms, group_id=gid, group_name=name
    ).encode("")


def push(r: redis.Redis, settings: Settings, shard: int, iid: str, encoded: list[bytes]) -> None:
    """XADD events as the ingest script does (the integration id filled in)."""
    stream = RedisKeys(settings.key_prefix).stream(shard)
    with r.pipeline(transaction=False) as pipe:
        for raw in encoded:
            event = orjson.loads(raw)
            event[0] = iid
            pipe.xadd(stream, {"e": orjson.dumps(event)})
        pipe.execute()


@pytest.fixture
def drain_env(settings: Settings, r: redis.Redis) -> Iterator[Drainer]:
    """The drain jobs served by one Drainer, as the worker runner serves them."""
    batches = settings.model_copy(update={"drain_batch": 50})  # one listing across many
    drainer = Drainer.build(batches, r)
    with workers.drain.serving(drainer):
        yield drainer
    drainer.close()


def workload(iid: str) -> tuple[list[bytes], dict[tuple[str, str], int]]:
    """~200 chats naming only group "gbig", 40 naming only "gmiss" (not in Freshchat's list)
    among them, 20 carrying their name; every event delivered twice. Returns the events and
    the counts."""
    events: list[bytes] = []
    expected: dict[tuple[str, str], int] = {}
    base = at("2026-11-23T08:00")
    for n in range(200):
        t = base + n * 60_000  # one a minute: 14 intervals
        events.append(solved(f"big-{n}", t, "gbig"))
        slot = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime((t // 900_000) * 900))
        expected[(slot, "Customer Support")] = expected.get((slot, "Customer Support"), 0) + 1
        if n % 5 == 0:  # both ids are needed in the first batch already
            events.append(solved(f"miss-{n // 5}", base, "gmiss"))
    for n in range(20):
        events.append(solved(f"named-{n}", base, "gnamed", "Sales"))
    expected[("2026-11-23T08:00Z", "Undefined_Queue")] = 40
    expected[("2026-11-23T08:00Z", "Sales")] = 20
    return events + events, expected


def test_an_absent_id_counts_in_undefined_queue_why_6(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    t = at("2026-11-23T08:07")
    push(r, settings, shard, iid, [solved("c1", t, "gone"), solved("c2", t, "g3")])
    applier = Applier(r, settings)
    first = applier.apply(shard)
    assert (first.applied, sorted(first.needs)) == (0, [(iid, "g3"), (iid, "gone")])
    resolver = GroupResolver(r, settings)
    try:
        assert resolver.resolve(shard, first.needs) is True
    finally:
        resolver.client.close()
    assert applier.apply(shard).applied == 0  # both were parked, out of the shard's way
    assert applier.apply(shard, parked=iid).applied == 2
    assert counts(r, settings, iid, shard) == {
        ("2026-11-23T08:00Z", "Undefined_Queue"): 1,
        ("2026-11-23T08:00Z", "Sales: EMEA 🚀"): 1,
    }
    assert (chat_state(r, settings, shard, iid, "c1") or "").endswith("6")  # not in Freshchat
    assert (chat_state(r, settings, shard, iid, "c2") or "").endswith("3")  # named by Freshchat
    assert fc.listed_pages() == PAGES and fc.group_gets() == []


def test_drain_makes_one_listing_for_every_unknown_group(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, drain_env: Drainer
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    events, expected = workload(iid)
    push(r, settings, shard, iid, events)
    summary = workers.drain.drain(shard)
    assert summary["applied"] == len(events) == 520
    assert summary["batches"] > 10  # many batches...
    assert fc.listed_pages() == PAGES  # ...one listing
    assert fc.group_gets() == []
    assert all(q.authorization == f"Bearer {GOOD}" for q in fc.requests)
    assert counts(r, settings, iid, shard) == expected
    assert r.xlen(RedisKeys(settings.key_prefix).stream(shard)) == 0
    # More events for the same groups later: served from the cache, no call.
    push(r, settings, shard, iid, [solved("late", at("2026-11-23T12:00"), "gbig")])
    workers.drain.drain(shard)
    assert len(fc.requests) == len(PAGES)
    assert counts(r, settings, iid, shard)[("2026-11-23T12:00Z", "Customer Support")] == 1
    assert calls(r, settings) == {"ok": len(PAGES)}


def test_a_chat_solved_without_a_group_gets_it_from_freshchat(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, drain_env: Drainer
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    known, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    fc.script.conversations = {known: "g3"}  # the other one is unknown to Freshchat: 404
    t = at("2026-11-23T08:07")
    unnamed = [
        Compact(chat_key(cid), Kind.SOLVED_GROUP_UNNAMED, t, "", "").encode("")
        for cid in (known, unknown)
    ]
    push(r, settings, shard, iid, unnamed + unnamed)
    workers.drain.drain(shard)
    assert counts(r, settings, iid, shard) == {
        ("2026-11-23T08:00Z", "Sales: EMEA 🚀"): 1,
        ("2026-11-23T08:00Z", "Undefined_Queue"): 1,
    }
    keys = RedisKeys(settings.key_prefix)
    assert assignment(r, settings, shard, iid, chat_key(known)) == "0:g3"
    assert assignment(r, settings, shard, iid, chat_key(unknown)) == "0:"
    assert (chat_state(r, settings, shard, iid, chat_key(known)) or "").endswith("8")
    assert sorted(q.path for q in fc.conversation_gets()) == sorted(
        f"/v2/conversations/{cid}" for cid in (known, unknown)
    )
    assert fc.listed_pages() == PAGES and fc.group_gets() == []
    assert waiting(r, keys, shard) == 0


def test_a_new_id_within_the_interval_waits_parked_then_is_counted(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, drain_env: Drainer
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    push(r, settings, shard, iid, [solved("a", at("2026-11-23T08:00"), "g1")])
    workers.drain.drain(shard)
    fc.script.groups["gfresh"] = "Created a moment ago"
    push(r, settings, shard, iid, [solved("b", at("2026-11-23T08:01"), "gfresh")])
    workers.drain.drain(shard)
    keys = RedisKeys(settings.key_prefix)
    assert waiting(r, keys, shard) == 1  # waits for the next listing, nothing guessed
    assert fc.listed_pages() == PAGES
    time.sleep(settings.group_list_every_seconds + 0.05)
    workers.drain.drain(shard)
    assert waiting(r, keys, shard) == 0
    assert fc.listed_pages() == PAGES + PAGES
    assert counts(r, settings, iid, shard) == {
        ("2026-11-23T08:00Z", "Customer Support"): 1,
        ("2026-11-23T08:00Z", "Created a moment ago"): 1,
    }


@pytest.mark.parametrize("how", ["5xx", "connection refused"])
def test_events_wait_while_freshchat_is_down(
    r: redis.Redis,
    settings: Settings,
    drain_env: Drainer,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    domain = f"http://127.0.0.1:{port}"
    iid, shard = add_integration(settings, domain)
    events, expected = workload(iid)
    push(r, settings, shard, iid, events)
    keys = RedisKeys(settings.key_prefix)
    waits = 2 * (200 + 40)  # the 20 named chats do not wait
    standin = FreshchatStandIn(port) if how == "5xx" else None
    try:
        if standin is not None:
            standin.fail_always(503)
        summary = workers.drain.drain(shard)
        assert summary["applied"] == 40
        assert waiting(r, keys, shard) == waits  # nothing lost...
        assert r.xlen(keys.stream(shard)) == 0  # ...and parked out of the shard's way
        assert counts(r, settings, iid, shard) == {("2026-11-23T08:00Z", "Sales"): 20}
        if standin is not None:
            assert len(standin.requests) == 1  # ...and no storm: the integration waits
        resolver = drain_env.resolver
        retry_at = float(r.hget(resolver.redis_keys.group_backoff(shard, iid), "at") or 0)
        assert 0 < retry_at - time.time() <= groups.BACKOFF_START_S
        # A drain before the retry time changes nothing and asks nobody.
        workers.drain.drain(shard)
        assert waiting(r, keys, shard) == waits
        # Freshchat comes back.
        if standin is None:
            standin = FreshchatStandIn(port)
        standin.recover()
        standin.clear_requests()
        standin.script.valid_keys = {GOOD}
        standin.script.groups = dict(LISTED)
        time.sleep(max(0.0, retry_at - time.time(), settings.group_list_every_seconds) + 0.05)
        workers.drain.drain(shard)
        assert counts(r, settings, iid, shard) == expected  # each chat exactly once
        assert waiting(r, keys, shard) == 0
        assert standin.listed_pages() == PAGES and standin.group_gets() == []
        workers.drain.drain(shard)
        assert counts(r, settings, iid, shard) == expected
        assert len(standin.requests) == len(PAGES)
        assert "lookup failed" in caplog.text and GOOD not in caplog.text
    finally:
        if standin is not None:
            standin.stop()
