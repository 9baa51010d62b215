"""Fixtures of the Redis Cluster tests (§14): a real local cluster the session starts (3
masters; flushed for each test), one with replicas for failover tests (its own per test),
and RQ's Redis apart from it (RQ does not run on a cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis

from app.settings import Settings
from tests.redis_cluster import RedisClusterHarness
from tests.redis_server import RedisServer
from tests.support import make_settings


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterHarness]:
    """3 masters, no replicas, for the whole session (about 2 s to start)."""
    with RedisClusterHarness(masters=3, replicas=0) as harness:
        yield harness


@pytest.fixture
def cluster(redis_cluster: RedisClusterHarness) -> RedisClusterHarness:
    """The session's cluster, emptied."""
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def failover_cluster() -> Iterator[RedisClusterHarness]:
    """3 masters with a replica each, in sync; this test's own (it kills nodes)."""
    with RedisClusterHarness(masters=3, replicas=1) as harness:
        yield harness


@pytest.fixture
def rq_redis(redis_server: RedisServer) -> RedisServer:
    """RQ's own Redis: the session's plain redis-server, emptied."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server


@pytest.fixture
def rc(cluster: RedisClusterHarness) -> Iterator[redis.Redis]:
    """A cluster client, typed as the product types its data clients (same command API)."""
    client = cluster.client()
    yield cast(redis.Redis, client)
    client.close()


@pytest.fixture
def cluster_settings(cluster: RedisClusterHarness, rq_redis: RedisServer) -> Settings:
    """REDIS_CLUSTER=true with REDIS_URL one node of the session's cluster; RQ apart."""
    return make_settings(cluster.url, redis_cluster=True, rq_redis_url=rq_redis.url)


@pytest.fixture
def failover_settings(failover_cluster: RedisClusterHarness, rq_redis: RedisServer) -> Settings:
    """REDIS_CLUSTER on the failover cluster, RQ apart, and a 202 only once a replica has
    the write (REDIS_REPLICA_ACKS=1; a short WAIT, so that a 503 comes quickly)."""
    return make_settings(
        failover_cluster.url,
        redis_cluster=True,
        rq_redis_url=rq_redis.url,
        redis_replica_acks=1,
        redis_replica_wait_ms=300,
    )
