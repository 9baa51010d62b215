"""Counting on a real Redis Cluster (§14): the §4 worked example and the order property,
with every script's keys in its shard's slot (the shards spread over the three masters)."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.compact import Compact, Kind, chat_key
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.chat_support import assignment, chat_state
from tests.order_support import build, event_spec, oracle
from tests.redis_cluster import RedisClusterHarness
from tests.support import (
    WORKED_EXAMPLE_COUNTS,
    apply_all,
    at,
    counts,
    store,
    worked_example,
)
from workers.applier import Applier
from workers.chat_buckets import ChatBuckets

IID = "acme000000"


def masters_of_shards(cluster: RedisClusterHarness, settings: Settings) -> set[int]:
    keys = RedisKeys(settings.key_prefix)
    return {cluster.master_for_key(keys.stream(shard)) for shard in range(settings.shards)}


def test_the_worked_example_on_every_master(
    cluster: RedisClusterHarness, rc: redis.Redis, cluster_settings: Settings
) -> None:
    assert len(masters_of_shards(cluster, cluster_settings)) == 3  # the shards spread
    for shard in range(cluster_settings.shards):
        store(rc, cluster_settings, IID, shard, worked_example())
        assert apply_all(rc, cluster_settings, shard) == 13
        assert counts(rc, cluster_settings, IID, shard) == WORKED_EXAMPLE_COUNTS


def test_chat_buckets_split_sweep_and_the_webhook_path_on_a_cluster(
    rc: redis.Redis, cluster_settings: Settings
) -> None:
    shard, keys = 3, RedisKeys(cluster_settings.key_prefix)
    t = at("2026-11-23T08:05")
    chats = [chat_key(str(uuid.UUID(int=i + 7))) for i in range(400)]
    events = [Compact(c, Kind.SOLVED, t, "g1", "Support").encode(IID) for c in chats]
    assigned, unnamed = chats[0], chats[1]
    events.append(Compact(unnamed, Kind.ASSIGNED, t - 60_000, "g2", "Sales").encode(IID))
    events.append(Compact(unnamed, Kind.SOLVED_GROUP_UNNAMED, t - 1000, "", "").encode(IID))
    for e in events:
        rc.xadd(keys.stream(shard), {"e": e})
    applier = Applier(rc, cluster_settings)
    applied = 0
    start = "-"
    while True:
        result = applier.apply(shard, start, count=150)
        applied += result.applied
        if not result.last_id:
            break
        start = "(" + result.last_id
    assert applied == len(events)
    n = int(rc.hget(keys.chat_buckets(shard), IID) or 1)
    assert n > 1  # split on the cluster
    assert counts(rc, cluster_settings, IID, shard) == {
        ("2026-11-23T08:00Z", "Support"): 399,
        ("2026-11-23T08:00Z", "Sales"): 1,
    }
    assert (chat_state(rc, cluster_settings, shard, IID, unnamed) or "").endswith("7")
    assert assignment(rc, cluster_settings, shard, IID, unnamed).endswith(":g2")
    buckets = ChatBuckets(applier)
    buckets.remember_lookup(shard, IID, assigned, "g5")
    assert assignment(rc, cluster_settings, shard, IID, assigned) == "0:g5"
    assert buckets.sweep(shard) == 0


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=st.lists(event_spec, min_size=1, max_size=16), data=st.data())
def test_any_order_and_duplicates_give_the_same_counts_on_a_cluster(
    cluster: RedisClusterHarness,
    rc: redis.Redis,
    cluster_settings: Settings,
    specs: list[Any],
    data: st.DataObject,
) -> None:
    expected = oracle(specs)
    payloads = [build(s) for s in specs]
    extra = data.draw(st.lists(st.integers(0, len(payloads) - 1), max_size=len(payloads)))
    order = data.draw(st.permutations(list(range(len(payloads))) + extra))
    split = data.draw(st.integers(0, len(order)))
    shard = data.draw(st.integers(0, cluster_settings.shards - 1))
    cluster.flush()
    store(rc, cluster_settings, IID, shard, [payloads[i] for i in order[:split]])
    apply_all(rc, cluster_settings, shard, batch=data.draw(st.integers(1, 8)))
    store(rc, cluster_settings, IID, shard, [payloads[i] for i in order[split:]])
    apply_all(rc, cluster_settings, shard, batch=data.draw(st.integers(1, 8)))
    assert counts(rc, cluster_settings, IID, shard) == expected
