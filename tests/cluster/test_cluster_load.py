"""The web and worker processes on a real Redis Cluster under load (§14, §11): a live slot
migration of the busy shard, and its master SIGKILLed with REDIS_REPLICA_ACKS=1 while a
replica takes over. Only 202, 503 (+ Retry-After) or 429 answers; every 202 counted once."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import redis

from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.redis_cluster import RedisClusterHarness
from tests.redis_server import RedisServer
from tests.reliability.harness import (
    FIGURES,
    Delivery,
    chat_event,
    create_integration,
    create_key,
    deliver,
    stack,
)
from tests.support import (
    base_day,
    bearer,
    day_ms,
    make_settings,
    read_counts,
    shard_of,
    wait_until,
)

CLIENTS = 6


Plan = list[tuple[dict[str, Any], tuple[str, str]]]


def load(
    url: str,
    key: str,
    plan: list[tuple[dict[str, Any], tuple[str, str]]],
    during: Callable[[], None],
) -> list[Delivery]:
    """Deliver every event (retrying like the app) from CLIENTS threads while `during` runs."""
    results: list[Delivery | None] = [None] * len(plan)
    hard_stop = time.monotonic() + 120

    def client_run(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=url, headers=bearer(key), timeout=15) as client:
            for n in range(index, len(plan), CLIENTS):
                if time.monotonic() > hard_stop:
                    return
                results[n] = deliver(client, plan[n][0], retries=8, pause=0.3, rng=rng)
                time.sleep(0.01)

    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        fault = pool.submit(during)
        list(pool.map(client_run, range(CLIENTS)))
        fault.result()
    done = [d for d in results if d is not None]
    assert len(done) == len(plan), "the load did not finish in time"
    return done


def check_exact(
    url: str,
    iid: str,
    plan: Plan,
    done: list[Delivery],
    stored: Callable[[], int],
) -> dict[str, int]:
    """Every 202's chat counted once, nothing counted twice; figures for the report."""
    statuses = {st for d in done for st in d.statuses}
    assert statuses <= {202, 429, 503}, f"answers other than 202/429/503: {statuses}"
    acked = {plan[n][1] for n, d in enumerate(done) if d.ok}
    maybe = {plan[n][1] for n, d in enumerate(done) if not d.ok}
    wait_until(lambda: stored() == 0, 90, "every stored event applied")
    actual = read_counts(url, iid, base_day())
    counted = {row for row, n in actual.items() if n}
    lost = len(acked - counted)
    double = sum(n - 1 for n in actual.values() if n > 1) + len(counted - acked - maybe)
    assert (lost, double) == (0, 0), f"lost {lost}, double-counted {double}"
    return {
        "events": len(plan),
        "requests": len(plan),
        "requests_202": len(acked),
        "answers_503": sum(d.statuses.count(503) for d in done),
        "answers_429": sum(d.statuses.count(429) for d in done),
        "lost": lost,
        "double": double,
    }


def stored_events(client: redis.Redis, settings: Settings) -> Callable[[], int]:
    """Events stored and not yet applied (pending per integration, parked included)."""
    keys = RedisKeys(settings.key_prefix)

    def count() -> int:
        total = 0
        for shard in range(settings.shards):
            total += sum(int(v) for v in client.hvals(keys.pending(shard)))
        return total

    return count


def test_a_live_migration_of_the_busy_shard_under_ingest_and_draining(
    cluster: RedisClusterHarness, rq_redis: RedisServer
) -> None:
    settings = make_settings(cluster.url, redis_cluster=True, rq_redis_url=rq_redis.url)
    rng = random.Random(7)
    plan = [chat_event(n, day_ms(base_day()), rng) for n in range(1200)]
    moved: list[tuple[int, int, int]] = []
    client = cast(redis.Redis, cluster.client())
    with stack(settings) as s:
        web = s.web()
        s.worker()
        s.worker()
        iid = create_integration(web.url, "Moving", f"fc-moving-{uuid.uuid4().hex}")
        _, key = create_key(web.url, iid)
        shard = shard_of(client, settings, iid)
        stream = RedisKeys(settings.key_prefix).stream(shard)
        slot = cluster.key_slot(stream)

        def migrate() -> None:
            time.sleep(1.0)  # the shard busy with events and drains first
            for _ in range(2):  # away to another master, and back
                source = cluster.slot_owner(slot)
                target = next(p for p in cluster.masters() if p != source)
                keys = cluster.migrate_slot(slot, target, batch=5, pause=0.05)
                moved.append((source, target, keys))
                time.sleep(0.8)

        done = load(web.url, key, plan, migrate)
        figures = check_exact(web.url, iid, plan, done, stored_events(client, settings))
    assert len(moved) == 2 and all(keys > 0 for _, _, keys in moved), moved
    FIGURES.record("cluster_slot_migration", **figures, faults=len(moved),
                   keys_moved=sum(k for _, _, k in moved))  # fmt: skip
    print(FIGURES.line())
    client.close()


def test_a_master_killed_under_load_loses_no_accepted_event(
    failover_cluster: RedisClusterHarness, failover_settings: Settings
) -> None:
    c = failover_cluster
    settings = failover_settings
    rng = random.Random(11)
    plan = [chat_event(n, day_ms(base_day()), rng) for n in range(1200)]
    killed: list[int] = []
    promoted: list[int] = []
    client = cast(redis.Redis, c.client())
    with stack(settings) as s:
        web = s.web()
        worker = s.worker()
        iid = create_integration(web.url, "Failing", f"fc-failing-{uuid.uuid4().hex}")
        _, key = create_key(web.url, iid)
        shard = shard_of(client, settings, iid)
        master = c.master_for_key(RedisKeys(settings.key_prefix).stream(shard))
        started = threading.Event()

        def kill_master() -> None:
            time.sleep(1.0)
            started.set()
            c.kill(master)  # SIGKILL: whatever the replica does not have is gone
            killed.append(master)
            promoted.append(c.wait_failover(master))
            # As its pod would be, the node comes back, as the new master's replica: until
            # it has caught up, no write has a replica to confirm it (503s).
            c.start_node(master)

        done = load(web.url, key, plan, kill_master)
        assert started.is_set() and promoted, "the master was not replaced"
        figures = check_exact(web.url, iid, plan, done, stored_events(client, settings))
        assert worker.proc.poll() is None, "the worker died:\n" + worker.output()[-3000:]
    FIGURES.record(
        "cluster_master_failover", **figures, faults=len(killed), killed=killed, promoted=promoted
    )
    print(FIGURES.line())
    client.close()
