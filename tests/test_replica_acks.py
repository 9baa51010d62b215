"""REDIS_REPLICA_ACKS (§14): a 202 means the events are on N replicas too (Redis WAIT); when
the replicas do not confirm in time the answer is 503 + Retry-After, and a retry stores
nothing twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from app.main import create_app
from app.redis_keys import RedisKeys
from tests.redis_server import RedisServer
from tests.support import (
    G1,
    apply_all,
    at,
    conv_event,
    counts,
    create_integration,
    make_settings,
    post_events,
    shard_of,
)

T = at("2026-11-23T08:07")


@pytest.fixture
def master_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and one replica of it, in sync."""
    master = RedisServer()
    replica = RedisServer("--replicaof", "127.0.0.1", str(master.port))
    deadline = time.monotonic() + 15
    while replica.client().info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    yield master, replica
    replica.stop()
    master.stop()


def test_a_202_means_the_replica_has_the_events(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    settings = make_settings(master.url, redis_replica_acks=1, redis_replica_wait_ms=500)
    keys = RedisKeys(settings.key_prefix)
    r = master.client()
    with TestClient(create_app(settings)) as client:
        iid, key = create_integration(client)
        shard = shard_of(r, settings, iid)
        chats = [str(uuid.uuid4()) for _ in range(20)]
        for chat in chats:
            assert post_events(client, key, conv_event(chat, "resolved", T, G1)).status_code == 202
            # WAIT returned before the answer: the replica holds every event answered 202.
            assert replica.client().xlen(keys.stream(shard)) == r.xlen(keys.stream(shard))
        batch = [conv_event(str(uuid.uuid4()), "resolved", T, G1) for _ in range(50)]
        assert post_events(client, key, batch).status_code == 202
        assert replica.client().xlen(keys.stream(shard)) == 70

        # The replica goes away: the write cannot be confirmed, so no 202.
        replica.kill()
        lost = conv_event(chats[0], "resolved", T - 60_000, G1)
        began = time.monotonic()
        answer = post_events(client, key, lost)
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "2"
        assert "replicas" in answer.json()["error"]
        assert time.monotonic() - began < 3  # bounded by REDIS_REPLICA_WAIT_MS
        # Back: the client's retry of the same request is a 202, and counts stay exact.
        replica.start()
        deadline = time.monotonic() + 15
        while replica.client().info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync again"
            time.sleep(0.05)
        assert post_events(client, key, lost).status_code == 202
    apply_all(r, settings, shard)
    assert sum(counts(r, settings, iid, shard).values()) == 70


def test_without_replicas_acks_1_refuses_every_write(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    settings = make_settings(redis_server.url, redis_replica_acks=1, redis_replica_wait_ms=50)
    with TestClient(create_app(settings)) as client:
        _, key = create_integration(client)
        event = conv_event(str(uuid.uuid4()), "resolved", T, G1)
        assert post_events(client, key, event).status_code == 503
        assert post_events(client, key, [event, event]).status_code == 503
    # (The write reached the master; unconfirmed, it was never answered 202.)
    plain = make_settings(redis_server.url)
    with TestClient(create_app(plain)) as client:
        assert post_events(client, key, event).status_code == 202
