"""Group names from Freshchat (§5) against a stand-in Freshchat and a real Redis: caching,
backoff, one call per unknown group id, and exact counts through the real drain path."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

import workers.drain
from app.events import Compact, Kind
from app.integration import IntegrationChanges, NewIntegration
from app.integrations import Integrations
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from tests.freshchat_standin import FreshchatStandIn, refused_domain, running
from tests.redis_server import RedisServer, free_port
from tests.support import at, counts, make_settings, waiting
from workers import groups
from workers.applier import Applier
from workers.drain import Drainer
from workers.groups import GroupResolver

GOOD = "fc-good-key"
T0 = 1_795_000_000.0  # a fixed "now" for the resolver's clock


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(redis_server: RedisServer, r: redis.Redis) -> Settings:
    return make_settings(redis_server.url, freshchat_allow_insecure=True)


@pytest.fixture
def fc() -> Iterator[FreshchatStandIn]:
    with running() as standin:
        standin.script.valid_keys = {GOOD}
        standin.script.groups = {"g1": "Customer Support", "g2": "Billing | EU"}
        yield standin


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(r: redis.Redis, settings: Settings, clock: Clock) -> Iterator[GroupResolver]:
    client = httpx.Client(timeout=httpx.Timeout(1.0), follow_redirects=False)
    yield GroupResolver(r, settings, client=client, clock=clock)
    client.close()


def add_integration(
    settings: Settings, domain: str, key: str = GOOD, name: str = "Acme"
) -> tuple[str, int]:
    """Create an integration the way the admin API does (no verification): (id, shard)."""

    async def run() -> tuple[str, int]:
        client = AsyncRedis.from_url(settings.redis_url)
        try:
            new = NewIntegration(name=name, freshchat_domain=domain, freshchat_api_key=key)
            created = await Integrations(client, settings).create(new, None)
        finally:
            await client.aclose()
        return created.id, created.shard

    return asyncio.run(run())


def integrations_call(settings: Settings, method: str, *args: Any) -> Any:
    async def run() -> Any:
        client = AsyncRedis.from_url(settings.redis_url)
        try:
            return await getattr(Integrations(client, settings), method)(*args)
        finally:
            await client.aclose()

    return asyncio.run(run())


def group_map(r: redis.Redis, settings: Settings, shard: int, iid: str) -> dict[str, bytes]:
    """Group id -> name (a Freshchat entry's expiry stripped) or the negative marker."""
    raw = r.hgetall(RedisKeys(settings.key_prefix).groups(shard, iid))
    out = {}
    for k, v in raw.items():
        value = v.encode() if isinstance(v, str) else v
        out[text(k)] = value.split(b"\1")[-1] if value.startswith(b"\1") else value
    return out


def backoff(r: redis.Redis, resolver: GroupResolver, shard: int, iid: str) -> dict[str, str]:
    raw = r.hgetall(resolver.redis_keys.group_backoff(shard, iid))
    return {text(k): text(v) for k, v in raw.items()}


# The resolver on its own.


def test_hit_writes_the_name_once(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g1")]) is True
    assert group_map(r, settings, shard, iid) == {"g1": b"Customer Support"}
    [request] = fc.group_gets()
    assert (request.path, request.authorization) == ("/v2/groups/g1", f"Bearer {GOOD}")
    # Positive cache: asking again makes no call.
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    assert len(fc.requests) == 1
    assert r.exists(resolver.redis_keys.group_lock(shard, iid, "g1")) == 0


def test_a_name_from_freshchat_is_refreshed_after_its_ttl(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver, clock: Clock
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    raw = r.hget(RedisKeys(settings.key_prefix).groups(shard, iid), "g1")
    assert raw == f"\1{int(T0) + groups.POSITIVE_TTL_S}\1Customer Support".encode()
    fc.script.groups["g1"] = "Customer Care"  # renamed in Freshchat
    clock.now += groups.POSITIVE_TTL_S - 1
    assert resolver.resolve(shard, [(iid, "g1")]) is True  # still fresh: no call
    assert len(fc.group_gets("g1")) == 1
    clock.now += 2
    assert resolver.resolve(shard, [(iid, "g1")]) is True
    assert group_map(r, settings, shard, iid) == {"g1": b"Customer Care"}
    assert len(fc.group_gets("g1")) == 2


def test_miss_writes_a_negative_marker_that_expires(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "gone")]) is True
    marker = group_map(r, settings, shard, iid)["gone"]
    assert marker == b"\0" + str(int(T0) + groups.NEGATIVE_TTL_S).encode()
    assert resolver.resolve(shard, [(iid, "gone")]) is True  # cached: no call
    assert len(fc.group_gets("gone")) == 1
    # After the TTL, Freshchat is asked again; the group exists by now.
    fc.script.groups["gone"] = "Returns"
    clock.now += groups.NEGATIVE_TTL_S
    assert resolver.resolve(shard, [(iid, "gone")]) is True
    assert group_map(r, settings, shard, iid)["gone"] == b"Returns"
    assert len(fc.group_gets("gone")) == 2


def test_404_counts_in_undefined_queue(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    resolver.clock = time.time  # the apply script compares the marker with real time
    iid, shard = add_integration(settings, fc.domain)
    t = at("2026-11-23T08:07")
    push(r, settings, shard, iid, [solved("c1", t, "gone"), solved("c2", t, "g1")])
    applier = Applier(r, settings)
    first = applier.apply(shard)
    assert (first.applied, sorted(first.needs)) == (0, [(iid, "g1"), (iid, "gone")])
    assert resolver.resolve(shard, first.needs) is True
    assert applier.apply(shard).applied == 0  # both were parked, out of the shard's way
    assert applier.apply(shard, parked=iid).applied == 2
    assert counts(r, settings, iid, shard) == {
        ("2026-11-23T08:00Z", "Undefined_Queue"): 1,
        ("2026-11-23T08:00Z", "Customer Support"): 1,
    }
    assert r.xlen(RedisKeys(settings.key_prefix).stream(shard)) == 0


def test_429_honours_retry_after(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.fail_next(429, retry_after="30")
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g2")]) is False
    assert group_map(r, settings, shard, iid) == {}
    assert len(fc.requests) == 1  # the integration is backing off: g2 was not asked
    assert float(backoff(r, resolver, shard, iid)["at"]) == T0 + 30
    clock.now += 29.5
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g2")]) is False
    assert len(fc.requests) == 1
    clock.now += 1
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g2")]) is True
    assert group_map(r, settings, shard, iid) == {"g1": b"Customer Support", "g2": b"Billing | EU"}
    assert [q.path for q in fc.requests] == ["/v2/groups/g1"] * 2 + ["/v2/groups/g2"]
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
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.fail_always(500)
    need = [(iid, "g1")]
    calls_at: list[float] = []
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
    assert group_map(r, settings, shard, iid) == {"g1": b"Customer Support"}
    assert backoff(r, resolver, shard, iid) == {}


def test_backoff_is_shared_by_worker_processes(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.fail_next(503, retry_after="60")
    assert resolver.resolve(shard, [(iid, "g1")]) is False
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        restarted = GroupResolver(r, settings, client=client, clock=clock)
        clock.now += 59
        assert restarted.resolve(shard, [(iid, "g1"), (iid, "g2")]) is False
        assert len(fc.requests) == 1
        clock.now += 2
        assert restarted.resolve(shard, [(iid, "g1"), (iid, "g2")]) is True
    assert len(fc.requests) == 3


def test_connection_refused_backs_off(
    r: redis.Redis, settings: Settings, resolver: GroupResolver, clock: Clock
) -> None:
    iid, shard = add_integration(settings, refused_domain())
    assert resolver.resolve(shard, [(iid, "g1")]) is False
    assert group_map(r, settings, shard, iid) == {}
    assert float(backoff(r, resolver, shard, iid)["at"]) == T0 + groups.BACKOFF_START_S


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
    assert "at" in backoff(r, resolver, shard, iid)


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
    fc.fail_next(403)
    clock.now += 1
    assert resolver.resolve(shard, [(iid, "g1")]) is False  # 403
    assert group_map(r, settings, shard, iid) == {}  # never a negative marker for these
    clock.now += 1
    assert resolver.resolve(shard, [(iid, "g1")]) is False  # still backing off: no call
    assert len(fc.requests) == 2
    integrations_call(settings, "update", iid, IntegrationChanges(freshchat_api_key=GOOD), None)
    assert resolver.resolve(shard, [(iid, "g1")]) is True  # a new key: backoff starts over
    assert group_map(r, settings, shard, iid) == {"g1": b"Customer Support"}
    assert [q.authorization for q in fc.requests] == [
        "Bearer fc-old-key",
        "Bearer fc-old-key",
        f"Bearer {GOOD}",
    ]
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


def test_a_lookup_in_flight_elsewhere_is_not_repeated(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    r.set(resolver.redis_keys.group_lock(shard, iid, "g1"), "other-worker", px=5000)
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g2")]) is True  # g2 learnt
    assert [q.path for q in fc.requests] == ["/v2/groups/g2"]
    # Not ours to drop:
    assert (
        r.get(resolver.redis_keys.group_lock(shard, iid, "g1")) == b"other-worker"
    )  # not ours to drop


def test_concurrent_workers_make_one_call(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, redis_server: RedisServer
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.slow(0.3)
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker() -> None:
        conn = redis_server.client()
        with httpx.Client(timeout=httpx.Timeout(2.0)) as client:
            resolver = GroupResolver(conn, settings, client=client)
            barrier.wait()
            results.append(resolver.resolve(shard, [(iid, "g1")]))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fc.requests) == 1
    assert group_map(r, settings, shard, iid) == {"g1": b"Customer Support"}
    assert len(results) == 8 and results.count(True) >= 1


def test_calls_per_integration_are_capped(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(groups, "MAX_CALLS_PER_MINUTE", 3)
    iid, shard = add_integration(settings, fc.domain)
    other, other_shard = add_integration(settings, fc.domain, name="Other")
    needs = [(iid, f"x{n}") for n in range(6)]
    assert resolver.resolve(shard, needs) is True
    assert len(fc.requests) == 3  # the rest waits for the next minute
    assert resolver.resolve(other_shard, [(other, "g1")]) is True  # others unaffected
    assert len(group_map(r, settings, shard, iid)) == 3


def test_time_budget_leaves_the_rest_for_the_next_drain(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.slow(0.15)
    resolver.budget_s = 0.1
    assert resolver.resolve(shard, [(iid, "g1"), (iid, "g2")]) is True
    assert len(fc.requests) == 1


# Through the real drain job (workers.drain.drain), served with a Drainer as the worker does.


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
    batches = settings.model_copy(update={"drain_batch": 50})  # one lookup across many
    drainer = Drainer.build(batches, r)
    with workers.drain.serving(drainer):
        yield drainer
    drainer.close()


def workload(iid: str) -> tuple[list[bytes], dict[tuple[str, str], int]]:
    """~200 chats naming only group "gbig", 40 naming only "gmiss" (404 at Freshchat), 20
    carrying their name; every event delivered twice. Returns the events and the counts."""
    events: list[bytes] = []
    expected: dict[tuple[str, str], int] = {}
    base = at("2026-11-23T08:00")
    for n in range(200):
        t = base + n * 60_000  # one a minute: 14 intervals
        events.append(solved(f"big-{n}", t, "gbig"))
        slot = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime((t // 900_000) * 900))
        expected[(slot, "Customer Support")] = expected.get((slot, "Customer Support"), 0) + 1
    for n in range(40):
        events.append(solved(f"miss-{n}", base, "gmiss"))
    for n in range(20):
        events.append(solved(f"named-{n}", base, "gnamed", "Sales"))
    expected[("2026-11-23T08:00Z", "Undefined_Queue")] = 40
    expected[("2026-11-23T08:00Z", "Sales")] = 20
    return events + events, expected


def test_drain_makes_one_lookup_per_unknown_group(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, drain_env: Drainer
) -> None:
    fc.script.groups["gbig"] = "Customer Support"
    iid, shard = add_integration(settings, fc.domain)
    events, expected = workload(iid)
    push(r, settings, shard, iid, events)
    summary = workers.drain.drain(shard)
    assert summary["applied"] == len(events) == 520
    assert sorted(q.path for q in fc.requests) == ["/v2/groups/gbig", "/v2/groups/gmiss"]
    assert all(q.authorization == f"Bearer {GOOD}" for q in fc.requests)
    assert counts(r, settings, iid, shard) == expected
    assert r.xlen(RedisKeys(settings.key_prefix).stream(shard)) == 0
    # More events for the same groups later: served from the cache, no call.
    push(r, settings, shard, iid, [solved("late", at("2026-11-23T12:00"), "gbig")])
    workers.drain.drain(shard)
    assert len(fc.requests) == 2
    assert counts(r, settings, iid, shard)[("2026-11-23T12:00Z", "Customer Support")] == 1


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
        standin.script.groups["gbig"] = "Customer Support"
        time.sleep(max(0.0, retry_at - time.time()) + 0.05)
        workers.drain.drain(shard)
        assert counts(r, settings, iid, shard) == expected  # each chat exactly once
        assert waiting(r, keys, shard) == 0
        assert sorted(q.path for q in standin.requests) == ["/v2/groups/gbig", "/v2/groups/gmiss"]
        workers.drain.drain(shard)
        assert counts(r, settings, iid, shard) == expected
        assert len(standin.requests) == 2
        assert "lookup failed" in caplog.text and GOOD not in caplog.text
    finally:
        if standin is not None:
            standin.stop()
