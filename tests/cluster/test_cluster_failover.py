"""REDIS_REPLICA_ACKS on a Redis Cluster with replicas (§14): a 202 means the shard's replica
has the events; a replica or a master going away gives 503 + Retry-After, never a 500, and
once a replica took a killed master over the web tier writes to it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from starlette.testclient import TestClient

from app.commit import GroupCommit, Write
from app.lua import STORED_OK, StoreOutcome
from app.main import create_app
from app.redis_client import async_data_client
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.redis_cluster import RedisClusterHarness
from tests.support import (
    ADMIN,
    G1,
    at,
    conv_event,
    create_integration,
    make_settings,
    post_events,
    shard_of,
)

T = at("2026-11-23T08:07")


@pytest.fixture
def frc(failover_cluster: RedisClusterHarness) -> Iterator[redis.Redis]:
    """A cluster client of the failover cluster, typed as the product types data clients."""
    client = failover_cluster.client()
    yield cast(redis.Redis, client)
    client.close()


def event() -> dict[str, Any]:
    """One resolved chat."""
    return conv_event(str(uuid.uuid4()), "resolved", T, G1)


def every_shard_once(c: RedisClusterHarness, settings: Settings, frc: redis.Redis) -> None:
    """One flush with a write to every shard: per master one pipeline [EVALSHA..., WAIT]."""
    keys = RedisKeys(settings.key_prefix)
    shards = range(settings.shards)
    for shard in shards:
        frc.hset(keys.active_api_keys(shard, f"i{shard}"), f"h{shard}", "k")

    async def store() -> list[StoreOutcome]:
        client = async_data_client(settings, socket_timeout=5)
        commit = GroupCommit(client, settings, lambda shard: None)
        try:
            writes = [Write(s, f"i{s}", f"h{s}", [b"e1", b"e2"]) for s in shards]
            return list(await asyncio.gather(*(commit.store(w) for w in writes)))
        finally:
            await client.aclose()

    assert asyncio.run(store()) == [STORED_OK] * settings.shards
    for shard in shards:
        stream = keys.stream(shard)
        [replica] = c.replicas_of(c.master_for_key(stream))
        assert c.read(replica, "XLEN", stream) == 2  # confirmed by WAIT before the answer
        frc.delete(stream, keys.drain_flag(shard))


def test_replica_acks_and_failover_on_a_cluster_answer_202_or_503(
    failover_cluster: RedisClusterHarness, failover_settings: Settings, frc: redis.Redis
) -> None:
    c = failover_cluster
    settings = failover_settings
    keys = RedisKeys(settings.key_prefix)
    every_shard_once(c, settings, frc)
    with TestClient(create_app(settings)) as client:
        # Two integrations whose shards live on different masters.
        first, first_key = create_integration(client, name="First")
        stream = keys.stream(shard_of(frc, settings, first))
        master = c.master_for_key(stream)
        for n in range(20):
            second, second_key = create_integration(client, name=f"Second {n}")
            other_stream = keys.stream(shard_of(frc, settings, second))
            other_master = c.master_for_key(other_stream)
            if other_master != master:
                break
        assert other_master != master
        [replica] = c.replicas_of(master)

        # WAIT returned before the 202: the shard's replica holds every event answered 202.
        for n in range(1, 6):
            assert post_events(client, first_key, event()).status_code == 202
            assert c.read(replica, "XLEN", stream) == c.node(master).xlen(stream) == n
        assert post_events(client, second_key, [event(), event()]).status_code == 202
        assert c.read(c.replicas_of(other_master)[0], "XLEN", other_stream) == 2

        # The replica goes away: no 202 for that shard (bounded by REDIS_REPLICA_WAIT_MS).
        c.kill(replica)
        began = time.monotonic()
        refused = post_events(client, first_key, event())
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "2"
        assert "replicas" in refused.json()["error"]
        assert time.monotonic() - began < 3
        assert post_events(client, second_key, event()).status_code == 202  # other shards fine

        # The other shard's master goes away: 503s (never a 500) until its replica took
        # over; then the write reaches the promoted master, which has no replica left to
        # confirm it, so still 503, now naming the replicas.
        c.kill(other_master)
        answers = [post_events(client, second_key, event()) for _ in range(3)]
        listed = client.get("/v1/integrations", headers=ADMIN)
        assert listed.status_code in (200, 503)
        promoted = c.wait_failover(other_master)
        for _ in range(10):
            answers.append(post_events(client, second_key, event()))
            if "replicas" in answers[-1].text:
                break
        assert {a.status_code for a in answers} == {503}, [a.text for a in answers]
        assert all(a.headers["Retry-After"] == "2" for a in answers)
        assert "replicas" in answers[-1].json()["error"], [a.text for a in answers]
        assert c.node(promoted).xlen(other_stream) >= 3  # the replica had the first three
        assert client.get("/readyz").status_code == 200

    # Without replica acks the promoted master takes writes as usual.
    plain = make_settings(c.url, redis_cluster=True, rq_redis_url=settings.rq_redis_url)
    before = c.node(promoted).xlen(other_stream)
    with TestClient(create_app(plain)) as client:
        assert post_events(client, second_key, event()).status_code == 202
    assert c.node(promoted).xlen(other_stream) == before + 1
