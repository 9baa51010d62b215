"""RQ's Redis found through Sentinel (RQ_REDIS_URL=redis+sentinel://..., §14) beside a data
Redis Cluster: the web tier enqueues drains there and reads RQ's workers from there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from rq import Queue
from starlette.testclient import TestClient

from app.main import create_app
from app.redis_client import rq_client
from tests.redis_cluster import RedisClusterHarness
from tests.redis_server import RedisSentinel, RedisServer
from tests.support import (
    ADMIN,
    G1,
    at,
    conv_event,
    create_integration,
    make_settings,
    post_events,
    shard_of,
    wait_until,
)


@pytest.fixture
def sentinel(rq_redis: RedisServer) -> Iterator[RedisSentinel]:
    """A Sentinel watching RQ's Redis as `rq-master`."""
    watcher = RedisSentinel(rq_redis)
    yield watcher
    watcher.stop()


def test_drains_are_enqueued_in_rqs_redis_found_through_sentinel(
    cluster: RedisClusterHarness,
    rq_redis: RedisServer,
    sentinel: RedisSentinel,
    rc: redis.Redis,
) -> None:
    settings = make_settings(cluster.url, redis_cluster=True, rq_redis_url=sentinel.url)
    rq_plain = rq_redis.client()
    queue_key = f"rq:queue:{settings.rq_queue}"
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        iid, key = create_integration(client)
        event = conv_event(str(uuid.uuid4()), "resolved", at("2026-11-23T08:07"), G1)
        assert post_events(client, key, event).status_code == 202
        wait_until(lambda: rq_plain.llen(queue_key) == 1, 5, "the drain job in RQ's Redis")
        listed = client.get("/v1/integrations", headers=ADMIN)
        assert listed.status_code == 200 and listed.json()["integrations"][0]["id"] == iid
    rq = rq_client(settings, socket_timeout=5)
    [job] = Queue(settings.rq_queue, connection=rq).jobs
    assert job.func_name == "workers.drain.drain"
    assert job.args == (shard_of(rc, settings, iid),)
    assert not list(rc.scan_iter(match="rq:*"))  # nothing of RQ's in the cluster
    rq.close()
    rq_plain.close()
