"""The web tier and the admin code on a real Redis Cluster (§14): the client finds every
master from one node; integrations, keys, events, webhooks and reads work with the keys
spread over the masters; a live slot migration under load answers only 202 or 503."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline
from starlette.testclient import TestClient

from app.commit import GroupCommit, Write
from app.leases import Lease, LeaseLost, compare_and_delete
from app.main import create_app
from app.redis_client import async_data_client, data_client
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.redis_cluster import RedisClusterHarness
from tests.support import (
    ADMIN,
    G1,
    READER,
    at,
    conv_event,
    create_integration,
    post_events,
    post_webhook,
    set_up_webhook,
    shard_of,
    webhook_event,
    webhook_key_pem,
)

T = at("2026-11-23T08:07")
DAY = {"from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}


def test_a_client_given_one_node_finds_every_master(
    cluster: RedisClusterHarness, cluster_settings: Settings
) -> None:
    keys = RedisKeys(cluster_settings.key_prefix)
    flags = [keys.drain_flag(shard) for shard in range(cluster_settings.shards)]
    client = data_client(cluster_settings, socket_timeout=5)
    for flag in flags:
        client.set(flag, flag)
    owners = {flag: cluster.master_for_key(flag) for flag in flags}
    assert set(owners.values()) == set(cluster.masters())  # 8 hash tags over 3 masters
    for flag, port in owners.items():
        assert cluster.node(port).get(flag) == flag.encode()  # on the master of its slot
    client.close()

    async def read() -> list[Any]:
        aclient = async_data_client(cluster_settings, socket_timeout=5)
        try:
            return [await aclient.get(flag) for flag in flags]
        finally:
            await aclient.aclose()

    assert asyncio.run(read()) == [flag.encode() for flag in flags]


INCR = "#!lua flags=\nreturn redis.call('INCR', KEYS[1])"


def test_concurrent_script_calls_run_exactly_once_from_the_first_one_and_after_a_move(
    cluster: RedisClusterHarness, cluster_settings: Settings, rc: redis.Redis
) -> None:
    counters = [f"n{{{tag}}}" for tag in range(8)]

    async def call_all(client: Any) -> None:
        await asyncio.gather(*(client.eval(INCR, 1, counter) for counter in counters))

    async def run() -> None:
        client = async_data_client(cluster_settings, socket_timeout=5)
        try:
            moved_before = _errorstats(cluster, "MOVED")
            await call_all(client)  # a fresh client's first commands: each to its master
            assert _errorstats(cluster, "MOVED") == moved_before
            masters = cluster.masters()
            for counter in counters:  # every slot to another master, behind the client's back
                slot = cluster.key_slot(counter)
                owner = masters.index(cluster.slot_owner(slot))
                cluster.migrate_slot(slot, masters[(owner + 1) % 3], batch=100, pause=0)
            await call_all(client)  # each meets MOVED: followed, never sent twice
            assert _errorstats(cluster, "MOVED") > moved_before
        finally:
            await client.aclose()

    asyncio.run(run())
    assert [rc.get(counter) for counter in counters] == [b"2"] * len(counters)


def test_admin_events_webhooks_and_reads_on_a_cluster(
    cluster: RedisClusterHarness, cluster_settings: Settings, rc: redis.Redis
) -> None:
    keys = RedisKeys(cluster_settings.key_prefix)
    with TestClient(create_app(cluster_settings)) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        iid, key = create_integration(client)
        shard = shard_of(rc, cluster_settings, iid)
        master = cluster.node(cluster.master_for_key(keys.stream(shard)))

        # Events: stored in the shard's stream on the master serving its slot, with the
        # deliveries log of the same script call.
        for _ in range(3):
            event = conv_event(str(uuid.uuid4()), "resolved", T, G1)
            assert post_events(client, key, event).status_code == 202
        batch = [conv_event(str(uuid.uuid4()), "resolved", T, G1) for _ in range(20)]
        assert post_events(client, key, batch).json() == {"accepted": 20, "ignored": 0}
        assert master.xlen(keys.stream(shard)) == 23
        assert master.xlen(keys.deliveries(shard, iid)) == 4
        assert client.get(f"/v1/integrations/{iid}/deliveries", headers=ADMIN).status_code == 200

        # Reads: one MULTI on the shard's master (its keys share the slot).
        contacts = client.get(f"/v1/integrations/{iid}/contacts", params=DAY, headers=READER)
        assert contacts.status_code == 200, contacts.text
        assert contacts.json()["rows"] == []
        changes = client.get(f"/v1/integrations/{iid}/changes?since=0", headers=READER)
        assert changes.status_code == 200, changes.text
        listed = client.get("/v1/integrations", headers=ADMIN)
        assert listed.status_code == 200
        [one] = listed.json()["integrations"]
        assert one["pending_events"] == 23
        assert client.get("/metrics").status_code == 200

        # Keys: a second one, then the first revoked: 401 with it at once, 202 with the other.
        second = client.post(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()
        metas = client.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
        [first_id] = [m["key_id"] for m in metas if m["key_id"] != second["key_id"]]
        revoked = client.delete(f"/v1/integrations/{iid}/api-keys/{first_id}", headers=ADMIN)
        assert revoked.status_code == 204
        event = conv_event(str(uuid.uuid4()), "resolved", T, G1)
        assert post_events(client, key, event).status_code == 401
        assert post_events(client, second["api_key"], event).status_code == 202
        metas = client.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
        assert [m["revoked_at"] is not None for m in metas if m["key_id"] == first_id] == [True]

        # Freshchat's webhook: set (its keys in three slots), used, moved, deleted.
        path = set_up_webhook(client, iid)
        body = webhook_event("conversation_resolution", str(uuid.uuid4()), T, "g1")
        assert post_webhook(client, path, body).status_code == 202
        url = f"/v1/integrations/{iid}/webhook"
        moved = client.put(
            url, json={"public_key": webhook_key_pem(), "new_url": True}, headers=ADMIN
        )
        new_path = "/v1/freshchat/webhooks/" + moved.json()["webhook_id"]
        assert post_webhook(client, path, body).status_code == 404
        assert post_webhook(client, new_path, body).status_code == 202
        assert client.delete(url, headers=ADMIN).status_code == 204
        assert post_webhook(client, new_path, body).status_code == 404
        assert master.xlen(keys.stream(shard)) == 26

        # Delete: every key refused, the name free again.
        assert client.delete(f"/v1/integrations/{iid}", headers=ADMIN).status_code == 204
        assert post_events(client, second["api_key"], event).status_code == 401
        assert client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()["status"] == "deleted"
        again, _ = create_integration(client)  # "Acme" again
        assert again != iid


def test_one_flush_stores_each_shard_on_its_own_master(
    cluster: RedisClusterHarness, cluster_settings: Settings, rc: redis.Redis
) -> None:
    keys = RedisKeys(cluster_settings.key_prefix)
    shards = list(range(cluster_settings.shards))
    for shard in shards:  # an active key per shard, as create_key writes it
        rc.hset(keys.active_api_keys(shard, f"i{shard}"), f"h{shard}", "k")
    scheduled: list[int] = []

    async def store() -> list[Any]:
        redis_ = async_data_client(cluster_settings, socket_timeout=5)
        commit = GroupCommit(redis_, cluster_settings, scheduled.append)
        try:
            writes = [
                Write(shard, f"i{shard}", f"h{shard}", [f"e{shard}:{n}".encode() for n in range(3)])
                for shard in shards
            ]
            # All eight arrive while nothing is in flight: one flush, one call per shard.
            return list(await asyncio.gather(*(commit.store(w) for w in writes)))
        finally:
            await redis_.aclose()

    outcomes = asyncio.run(store())
    assert [o.stored.value for o in outcomes] == ["ok"] * len(shards)
    assert sorted(scheduled) == shards
    for shard in shards:
        stream = keys.stream(shard)
        node = cluster.node(cluster.master_for_key(stream))
        entries: list[Any] = node.xrange(stream)  # type: ignore[assignment]
        assert [fields[b"e"] for _, fields in entries] == [
            f"e{shard}:{n}".encode() for n in range(3)
        ]
    assert len({cluster.master_for_key(keys.stream(s)) for s in shards}) == 3


def test_a_lease_on_a_cluster_writes_only_while_held(
    cluster: RedisClusterHarness, rc: redis.Redis
) -> None:
    lease_key, record = "ifc:{5}:bfk:i1", "ifc:{5}:bf:i1:b1"
    lease = Lease(rc, lease_key, 5000)
    assert lease.acquire()

    def state(value: str) -> Callable[[Pipeline], None]:
        def fill(pipe: Pipeline) -> None:
            pipe.hset(record, "state", value)

        return fill

    assert lease.write(state("running")) == [1]
    assert rc.hget(record, "state") == b"running"
    assert lease.renew()
    rc.set(lease_key, "someone else")  # the lease ran out and another worker took it
    try:
        lease.write(state("lost"))
        raise AssertionError("a write under a lost lease went through")
    except LeaseLost:
        pass
    assert rc.hget(record, "state") == b"running"
    compare_and_delete(rc, lease_key, lease.token)  # not ours: kept
    assert rc.get(lease_key) == b"someone else"
    compare_and_delete(rc, lease_key, "someone else")
    assert rc.get(lease_key) is None


def test_a_live_migration_of_the_shards_slot_answers_only_202_or_503(
    cluster: RedisClusterHarness, cluster_settings: Settings, rc: redis.Redis
) -> None:
    keys = RedisKeys(cluster_settings.key_prefix)
    app, other_app = create_app(cluster_settings), create_app(cluster_settings)
    with TestClient(app) as client, TestClient(other_app) as reader:
        iid, key = create_integration(client)
        contacts = f"/v1/integrations/{iid}/contacts"
        assert reader.get(contacts, params=DAY, headers=READER).status_code == 200
        shard = shard_of(rc, cluster_settings, iid)
        stream = keys.stream(shard)
        slot = cluster.key_slot(stream)
        source = cluster.slot_owner(slot)
        dest = next(p for p in cluster.masters() if p != source)
        # More keys in the shard's slot (as counts and chat state would be), so that the
        # migration takes a while and the ingest script's keys move in different batches.
        with rc.pipeline(transaction=False) as pipe:
            for n in range(400):
                pipe.set(f"{keys.shard_prefix(shard)}filler:{n}", "x")
            pipe.execute()
        tryagain_before = _errorstat(cluster, source, "TRYAGAIN")

        moved: list[int] = []
        mover = threading.Thread(
            target=lambda: moved.append(cluster.migrate_slot(slot, dest, batch=2, pause=0.005))
        )
        answers: list[tuple[int, int]] = []  # (status, events)
        mover.start()
        while mover.is_alive():
            events = [conv_event(str(uuid.uuid4()), "resolved", T, G1) for _ in range(5)]
            answer = post_events(client, key, events)
            answers.append((answer.status_code, len(events)))
            if answer.status_code == 503:
                assert answer.headers["Retry-After"] == "2", answer.text
        mover.join()
        after = [conv_event(str(uuid.uuid4()), "resolved", T, G1)]
        answers.append((post_events(client, key, after).status_code, 1))
        # A process that did not see the move: its read meets MOVED, reads the slot map
        # again and is sent once more, to the new master.
        moved_before = _errorstat(cluster, source, "MOVED")
        assert reader.get(contacts, params=DAY, headers=READER).status_code == 200
        assert _errorstat(cluster, source, "MOVED") > moved_before  # (per queued command)

    assert moved and moved[0] > 400
    assert cluster.slot_owner(slot) == dest
    assert len(answers) >= 3  # requests kept coming during the migration
    assert {status for status, _ in answers} <= {202, 503}, answers
    assert answers[-1][0] == 202  # the slot map was read again after the move
    accepted = sum(n for status, n in answers if status == 202)
    stored = cluster.node(dest).xlen(stream)
    # Every 202 is stored (a 503 stored nothing: TRYAGAIN runs no script).
    assert stored == accepted, (stored, accepted, answers)
    # The traffic met the migration (the source refused multi-key calls meanwhile).
    assert _errorstat(cluster, source, "TRYAGAIN") > tryagain_before


def _errorstats(cluster: RedisClusterHarness, error: str) -> int:
    """How often all masters answered an error."""
    return sum(_errorstat(cluster, port, error) for port in cluster.masters())


def _errorstat(cluster: RedisClusterHarness, port: int, error: str) -> int:
    """How often a node answered an error (INFO errorstats)."""
    stats = cluster.node(port).info("errorstats").get(f"errorstat_{error}", {})
    return int(stats.get("count", 0)) if isinstance(stats, dict) else 0
