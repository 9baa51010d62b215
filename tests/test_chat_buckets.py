"""Chat state in compact buckets (§10 memory): placement, splits, retention by the sweep."""

from __future__ import annotations

import random
import time
import uuid

import pytest
import redis

from app.chat_state import BUCKET_LOAD, SPLIT_AT, bucket_count, bucket_of
from app.compact import Compact, Kind, chat_key
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from tests.chat_support import chat_state
from tests.support import apply_all, at, conv_event, counts, store
from workers.applier import Applier
from workers.chat_buckets import ChatBuckets

IID, SHARD = "acme000000", 0
T = at("2026-11-23T08:05")
DAY = 86_400
DAY_MS = DAY * 1000


def solved(chat: str, t: int = T, kind: Kind = Kind.SOLVED) -> bytes:
    return Compact(chat, kind, t, "g1", "Support").encode(IID)


def push(r: redis.Redis, settings: Settings, events: list[bytes]) -> None:
    stream = RedisKeys(settings.key_prefix).stream(SHARD)
    with r.pipeline(transaction=False) as pipe:
        for e in events:
            pipe.xadd(stream, {"e": e})
        pipe.execute()


def layout(r: redis.Redis, settings: Settings) -> tuple[int, int]:
    n, entries = r.hmget(RedisKeys(settings.key_prefix).chat_buckets(SHARD), [IID, IID + "#"])
    return bucket_count(n), int(entries or 0)


def test_a_chat_s_state_is_an_integer_in_a_listpack(r: redis.Redis, settings: Settings) -> None:
    chat = str(uuid.uuid4())
    store(r, settings, IID, SHARD, [conv_event(chat, "resolved", T, ("g1", "Support"))])
    apply_all(r, settings, SHARD)
    keys = RedisKeys(settings.key_prefix)
    [bucket] = r.scan_iter(match=keys.shard_prefix(SHARD) + "s:*")
    assert r.object("encoding", bucket) == b"listpack"
    assert r.ttl(bucket) == -1  # retention is the sweep's, not a TTL per chat
    [(field, value)] = r.hgetall(bucket).items()
    assert text(field) == chat_key(chat)
    assert text(value).isdigit() and int(value) < 2**63  # stored by Redis as an integer
    assert layout(r, settings) == (1, 1)


def test_buckets_split_as_an_integration_grows_and_every_chat_is_found(
    r: redis.Redis, settings: Settings
) -> None:
    rng = random.Random(7)
    chats = [chat_key(str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(3000)]
    push(r, settings, [solved(c) for c in chats])
    apply_all(r, settings, SHARD, batch=700)
    n, entries = layout(r, settings)
    # (Splits come before a batch that could fill buckets past SPLIT_AT: after the last one
    # they may hold more, never past what a listpack keeps.)
    assert entries == 3000 and 3000 / (2 * SPLIT_AT) <= n <= 3000 / BUCKET_LOAD + 1
    keys = RedisKeys(settings.key_prefix)
    sizes = [r.hlen(keys.chat_bucket(SHARD, IID, b)) for b in range(n)]
    assert sum(sizes) == 3000 and max(sizes) <= 128  # every bucket stays a listpack
    assert {r.object("encoding", keys.chat_bucket(SHARD, IID, b)) for b in range(n)} == {
        b"listpack"
    }
    assert all(r.hexists(keys.chat_bucket(SHARD, IID, bucket_of(c, n)), c) for c in chats)
    # Solving them all again (later) changes nothing: each is found where it is.
    push(r, settings, [solved(c, T + 60_000) for c in chats])
    apply_all(r, settings, SHARD)
    again, entries = layout(r, settings)
    assert entries == 3000 and again >= n  # (splits ahead of a batch may add buckets)
    assert all(r.hexists(keys.chat_bucket(SHARD, IID, bucket_of(c, again)), c) for c in chats)
    assert counts(r, settings, IID, SHARD) == {("2026-11-23T08:00Z", "Support"): 3000}


def test_the_sweep_forgets_chats_silent_for_the_ttl_and_keeps_the_rest(
    r: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [float(T // 1000)]
    monkeypatch.setattr(time, "time", lambda: now[0])
    quiet, busy = chat_key(str(uuid.uuid4())), chat_key(str(uuid.uuid4()))
    push(r, settings, [solved(quiet), solved(busy)])
    apply_all(r, settings, SHARD)
    applier = ChatBuckets(Applier(r, settings))
    ttl = settings.chat_ttl_days
    now[0] += (ttl - 1) * DAY  # one day before the TTL: the busy chat is touched again
    push(r, settings, [Compact(busy, Kind.OTHER, T, "", "").encode(IID)])
    apply_all(r, settings, SHARD)
    assert applier.sweep(SHARD, now[0]) == 0
    now[0] += DAY  # the quiet one's TTL is over
    assert applier.sweep(SHARD, now[0]) == 1
    assert chat_state(r, settings, SHARD, IID, quiet) is None
    assert chat_state(r, settings, SHARD, IID, busy) is not None
    assert layout(r, settings) == (1, 1)
    now[0] += (ttl - 2) * DAY
    assert applier.sweep(SHARD, now[0]) == 0
    now[0] += DAY
    assert applier.sweep(SHARD, now[0]) == 1  # and the busy one, a TTL after its last event
    # The counts stay: retention of counts is separate (§6).
    assert counts(r, settings, IID, SHARD) == {("2026-11-23T08:00Z", "Support"): 2}


def test_a_chat_moved_to_an_earlier_day_takes_its_count_along(
    r: redis.Redis, settings: Settings
) -> None:
    # The earlier day's counts key is not in the batch's plan: found while applying.
    chat = chat_key(str(uuid.uuid4()))
    push(r, settings, [solved(chat, at("2026-11-24T00:05"))])
    apply_all(r, settings, SHARD)
    push(r, settings, [solved(chat, at("2026-11-23T23:55")), solved("other", T)])
    assert Applier(r, settings).apply(SHARD).applied == 2
    assert counts(r, settings, IID, SHARD) == {
        ("2026-11-23T23:45Z", "Support"): 1,
        ("2026-11-23T08:00Z", "Support"): 1,
    }


def test_events_of_unknown_chats_that_are_not_terminal_store_nothing(
    r: redis.Redis, settings: Settings
) -> None:
    push(r, settings, [Compact("nobody", Kind.OTHER, T, "g1", "Support").encode(IID)])
    apply_all(r, settings, SHARD)
    assert layout(r, settings) == (1, 0)
    assert chat_state(r, settings, SHARD, IID, "nobody") is None


def test_state_kept_the_old_way_moves_into_buckets_before_the_first_drain(
    r: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before chat buckets, each chat was a key "<state><why>" with a TTL (renewed on touch).
    keys = RedisKeys(settings.key_prefix)
    rng = random.Random(3)
    chats = [chat_key(str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(450)]
    push(r, settings, [solved(c) for c in chats])
    apply_all(r, settings, SHARD)
    states = {c: chat_state(r, settings, SHARD, IID, c) for c in chats}
    before = counts(r, settings, IID, SHARD)
    r.delete(*r.scan_iter(match=keys.shard_prefix(SHARD) + "s:*"), keys.chat_buckets(SHARD))
    ttl_ms = settings.chat_ttl_days * 86_400_000
    for c, state in states.items():  # as the old apply script left them
        r.set(keys.legacy_chat(SHARD, IID, c), state or "", px=ttl_ms)
    # An assignment last touched 3 days ago, as its TTL tells.
    r.set(keys.legacy_assignment(SHARD, IID, chats[0]), "1795000000000:g9", px=ttl_ms - 3 * DAY_MS)
    # Every chat solved again, later: still one contact each, in the same interval.
    push(r, settings, [solved(c, T + 60_000) for c in chats])
    from workers.drain import Drainer

    drainer = Drainer.build(settings, r)
    try:
        assert drainer.drain(SHARD)["applied"] == len(chats)
    finally:
        drainer.close()
    assert counts(r, settings, IID, SHARD) == before
    assert not list(r.scan_iter(match=keys.shard_prefix(SHARD) + "c:*"))
    assert not list(r.scan_iter(match=keys.shard_prefix(SHARD) + "a:*"))
    assert {c: chat_state(r, settings, SHARD, IID, c) for c in chats} == states
    n, entries = layout(r, settings)
    assert entries == len(chats) + 1 and n >= len(chats) / SPLIT_AT
    from tests.chat_support import assignment

    assert assignment(r, settings, SHARD, IID, chats[0]) == "1795000000000:g9"
    # The assignment is forgotten 3 days before the chats, solved again today.
    now = [float(time.time())]
    ttl = settings.chat_ttl_days
    assert ChatBuckets(Applier(r, settings)).sweep(SHARD, now[0] + (ttl - 4) * DAY) == 0
    assert (
        ChatBuckets(Applier(r, settings)).sweep(SHARD, now[0] + (ttl - 3) * DAY) == 1
    )  # the assignment


def test_the_janitor_sweeps_each_shard_once_a_day(
    r: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.sweep import sweep_due

    now = [float(T // 1000)]
    monkeypatch.setattr(time, "time", lambda: now[0])
    push(r, settings, [solved("a"), solved("b")])
    apply_all(r, settings, SHARD)
    assert sweep_due(r, settings, now=now[0]) == dict.fromkeys(range(settings.shards), 0)
    assert sweep_due(r, settings, now=now[0] + 3600) == {}  # swept today already
    later = now[0] + settings.chat_ttl_days * DAY
    assert sweep_due(r, settings, now=later)[SHARD] == 2
    assert layout(r, settings) == (1, 0)


def test_the_worker_s_janitor_runs_the_daily_sweep(r: redis.Redis, settings: Settings) -> None:
    import threading

    from tests.support import wait_until
    from workers.runner import _janitor

    keys = RedisKeys(settings.key_prefix)
    stop = threading.Event()
    janitor = threading.Thread(target=_janitor, args=(r, r, settings, stop))
    janitor.start()
    try:
        wait_until(
            lambda: all(r.exists(keys.sweep_day(s)) for s in range(settings.shards)),
            10,
            "every shard swept today",
        )
    finally:
        stop.set()
        janitor.join()
    assert int(r.get(keys.sweep_day(0)) or 0) == int(time.time() // DAY)


def test_entries_taken_under_the_plan_are_read_again(
    r: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another drain (a lease that ran out) applies an entry between our read and our call.
    push(r, settings, [solved(f"c{i}") for i in range(5)])
    applier = Applier(r, settings)
    stream = RedisKeys(settings.key_prefix).stream(SHARD)
    planned = applier._plan
    taken: list[str] = []

    def plan_then_lose_one(*args: object, **kwargs: object) -> object:
        out = planned(*args, **kwargs)  # type: ignore[arg-type]
        if not taken:
            [(entry_id, _)] = r.xrange(stream, count=1) or []
            taken.append(text(entry_id))
            r.xdel(stream, taken[0])
        return out

    monkeypatch.setattr(applier, "_plan", plan_then_lose_one)
    assert applier.apply(SHARD).applied == 4  # the other four, once the stream was read again
    assert r.xlen(stream) == 0 and len(taken) == 1
    assert counts(r, settings, IID, SHARD) == {("2026-11-23T08:00Z", "Support"): 4}
