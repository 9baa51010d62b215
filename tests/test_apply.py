"""The apply script against a real Redis: §4 rules, order/duplicate independence, poison."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.compact import Compact, Kind
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.order_support import build, event_spec, oracle
from tests.support import (
    G1,
    G2,
    WORKED_EXAMPLE_COUNTS,
    apply_all,
    at,
    conv_event,
    counts,
    store,
    worked_example,
)
from workers.applier import Applier

IID, SHARD = "acme000000", 0


def test_worked_example(r: redis.Redis, settings: Settings) -> None:
    store(r, settings, IID, SHARD, worked_example())
    assert apply_all(r, settings, SHARD) == 13
    assert counts(r, settings, IID, SHARD) == WORKED_EXAMPLE_COUNTS
    assert r.xlen(RedisKeys(settings.key_prefix).stream(SHARD)) == 0


def test_worked_example_one_event_per_batch_reversed(r: redis.Redis, settings: Settings) -> None:
    store(r, settings, IID, SHARD, worked_example()[::-1])
    apply_all(r, settings, SHARD, batch=1)
    assert counts(r, settings, IID, SHARD) == WORKED_EXAMPLE_COUNTS


def test_count_moves_to_earlier_event_and_queue(r: redis.Redis, settings: Settings) -> None:
    chat = str(uuid.uuid4())
    store(r, settings, IID, SHARD, [conv_event(chat, "resolved", at("2026-11-23T10:05"), G1)])
    apply_all(r, settings, SHARD)
    assert counts(r, settings, IID, SHARD) == {("2026-11-23T10:00Z", "Customer Support"): 1}
    store(r, settings, IID, SHARD, [conv_event(chat, "spam", at("2026-11-23T09:00"), G1)])
    apply_all(r, settings, SHARD)
    assert counts(r, settings, IID, SHARD) == {("2026-11-23T09:00Z", "Undefined_Queue"): 1}
    keys = RedisKeys(settings.key_prefix)
    stats = r.hgetall(keys.queue_stats(SHARD, IID))
    assert stats[b"1:n"] == b"0" and stats[b"0:n"] == b"1"


def test_group_learnt_from_earlier_event(r: redis.Redis, settings: Settings) -> None:
    chat = str(uuid.uuid4())
    store(r, settings, IID, SHARD, [conv_event(chat, "assigned", at("2026-11-23T08:00"), G2)])
    store(
        r, settings, IID, SHARD,
        [conv_event(chat, "resolved", at("2026-11-23T08:05"), None, group_id_only="g2")],
    )  # fmt: skip
    apply_all(r, settings, SHARD)
    assert counts(r, settings, IID, SHARD) == {("2026-11-23T08:00Z", "Billing"): 1}


def test_unknown_group_id_waits_for_a_name(r: redis.Redis, settings: Settings) -> None:
    chat = str(uuid.uuid4())
    store(
        r, settings, IID, SHARD,
        [conv_event(chat, "resolved", at("2026-11-23T08:05"), None, group_id_only="g7")],
    )  # fmt: skip
    result = Applier(r, settings).apply(SHARD)
    assert (result.applied, result.needs) == (0, [(IID, "g7")])
    keys = RedisKeys(settings.key_prefix)
    assert r.xlen(keys.stream(SHARD)) == 0  # parked, out of the other integrations' way
    assert r.xlen(keys.parked(SHARD, IID)) == 1  # kept, not lost or guessed
    assert r.smembers(keys.parked_groups(SHARD, IID)) == {b"g7"}
    r.hset(RedisKeys(settings.key_prefix).groups(SHARD, IID), "g7", "Sales")
    apply_all(r, settings, SHARD)
    assert counts(r, settings, IID, SHARD) == {("2026-11-23T08:00Z", "Sales"): 1}


def test_poison_entry_is_dead_lettered_and_fails_visibly(
    r: redis.Redis, settings: Settings
) -> None:
    keys = RedisKeys(settings.key_prefix)
    good = Compact(
        chat="x", kind=Kind.SOLVED, time_ms=at("2026-11-23T08:05"), group_id="", group_name=""
    )
    r.xadd(keys.stream(SHARD), {"e": b"not json"})
    r.xadd(keys.stream(SHARD), {"e": good.encode(IID)})
    r.xadd(keys.stream(SHARD), {"e": orjson.dumps([IID, "y", 7, 1, "", ""])})
    result = Applier(r, settings).apply(SHARD)
    assert result.applied == 1 and len(result.dead_ids) == 2
    assert r.xlen(keys.stream(SHARD)) == 0 and r.xlen(keys.dead(SHARD)) == 2
    single = Applier(r, settings).apply(
        SHARD, result.dead_ids[0], count=1, dead_letter=True, end=result.dead_ids[0]
    )
    assert "6-element" in single.error
    assert r.xlen(keys.dead(SHARD)) == 2  # a failed retry keeps the event for the next one


# Property: any permutation with duplicates of the deliveries yields identical counts (§4.5).


@hsettings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=st.lists(event_spec, min_size=1, max_size=20), data=st.data())
def test_any_order_and_duplicates_give_the_same_counts(
    r: redis.Redis, settings: Settings, specs: list[Any], data: st.DataObject
) -> None:
    expected = oracle(specs)
    payloads = [build(s) for s in specs]
    extra = data.draw(st.lists(st.integers(0, len(payloads) - 1), max_size=2 * len(payloads)))
    order = data.draw(st.permutations(list(range(len(payloads))) + extra))
    split = data.draw(st.integers(0, len(order)))
    batch = data.draw(st.integers(1, 8))
    r.flushall()
    store(r, settings, IID, SHARD, [payloads[i] for i in order[:split]])
    apply_all(r, settings, SHARD, batch=batch)
    store(r, settings, IID, SHARD, [payloads[i] for i in order[split:]])
    apply_all(r, settings, SHARD, batch=batch)
    assert counts(r, settings, IID, SHARD) == expected


def test_freshchat_names_count_at_once_and_ask_for_a_refresh_when_expired(
    r: redis.Redis, settings: Settings
) -> None:
    groups = RedisKeys(settings.key_prefix).groups(SHARD, IID)
    now = int(time.time())
    r.hset(groups, mapping={"g8": f"\1{now + 60}\1Fresh", "g9": f"\1{now - 60}\1Old"})
    store(
        r, settings, IID, SHARD,
        [
            conv_event("a", "resolved", at("2026-11-23T08:05"), None, group_id_only="g8"),
            conv_event("b", "resolved", at("2026-11-23T08:05"), None, group_id_only="g9"),
        ],
    )  # fmt: skip
    result = Applier(r, settings).apply(SHARD)
    assert result.applied == 2 and result.needs == [(IID, "g9")]
    assert counts(r, settings, IID, SHARD) == {
        ("2026-11-23T08:00Z", "Fresh"): 1,
        ("2026-11-23T08:00Z", "Old"): 1,
    }
