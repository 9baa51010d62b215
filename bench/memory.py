"""Memory: Redis bytes per tracked chat and per pending event (UUID chat ids), on one Redis
and on a 3-master Redis Cluster (the shard's master measured)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import cast

from redis import Redis

from app.compact import Compact, Kind, chat_key
from app.settings import Settings
from bench.common import (
    GROUPS,
    Row,
    bench_settings,
    counted,
    create_tenant,
    log,
    private_redis,
    run_drain,
    stream_key,
    uuid_of,
    xadd_all,
)
from tests.redis_cluster import RedisClusterHarness

CHUNK = 100_000  # pending events at a time


def used_memory(redis: Redis) -> int:
    """INFO memory used_memory (allocator bytes, what maxmemory is compared with)."""
    return int(redis.info("memory")["used_memory"])


def fill(
    settings: Settings, client: Redis, node_for: Callable[[str], Redis], n: int, time_ms: int
) -> tuple[float, float, int, set[str]]:
    """Apply n terminal events of distinct UUID chats chunk by chunk; bytes per chat and
    per pending event on the shard's server (`node_for(stream key)`), chat buckets and
    their encodings."""
    rng = random.Random(42)
    tenant = create_tenant(settings)
    stream = stream_key(settings, tenant.shard)
    server = node_for(stream)

    def node() -> Redis:
        return server

    def events(count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            gid, gname = GROUPS[rng.randrange(len(GROUPS))]
            kind = Kind.DELETED if rng.random() < 0.1 else Kind.SOLVED
            t = time_ms - rng.randrange(86_400_000)
            c = Compact(chat_key(uuid_of(rng)), kind, t, gid, gname)
            out.append(c.encode(tenant.iid))
        return out

    # Warm-up: scripts loaded, per-integration hashes (groups, queues) created.
    warm = events(1000)
    xadd_all(client, stream, warm)
    run_drain(settings, tenant.shard, len(warm))
    base = used_memory(node())
    pending = 0.0
    for done in range(0, n, CHUNK):
        batch = events(CHUNK)
        before = used_memory(node())
        xadd_all(client, stream, batch)
        if not done:
            pending = (used_memory(node()) - before) / CHUNK
        run_drain(settings, tenant.shard, CHUNK)
    per_chat = (used_memory(node()) - base) / n
    if counted(client, settings, tenant.shard) != n + len(warm):
        raise RuntimeError("memory: counts do not match the chats applied")
    pattern = f"{settings.key_prefix}:{{{tenant.shard}}}:s:*"
    buckets = list(node().scan_iter(pattern, 1000))
    return per_chat, pending, len(buckets), {node().object("encoding", k).decode() for k in buckets}


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """Up to 10^6 tracked chats (2*10^5 quick), on one Redis, then on a cluster."""
    n = 200_000 if quick else 1_000_000
    log(f"memory: {n:,} tracked chats, {CHUNK:,} pending events at a time, one Redis")
    with private_redis() as server:
        client = server.client()
        one = fill(bench_settings(server.url), client, lambda _: client, n, time_ms)
    log(f"memory: {n:,} tracked chats on a 3-master Redis Cluster")
    with RedisClusterHarness(masters=3) as cluster, private_redis() as rq:
        settings = bench_settings(cluster.url, redis_cluster=True, rq_redis_url=rq.url)
        client = cast(Redis, cluster.client())
        on_cluster = fill(
            settings, client, lambda key: cluster.node(cluster.master_for_key(key)), n, time_ms
        )
        client.close()
    notes = [
        f"used_memory delta over {n:,} chats (one integration, 12 groups, times over one"
        f" day): one Redis {one[0]:.1f} B/chat in {one[2]:,} chat buckets ({sorted(one[3])});"
        f" cluster (the shard's master) {on_cluster[0]:.1f} B/chat in {on_cluster[2]:,}"
        f" buckets ({sorted(on_cluster[3])})"
    ]
    rows = [
        Row("Redis bytes per tracked chat", f"{one[0]:.0f} B", "", "", "<= 64 B", one[0] <= 64),
        Row(
            "  same, on a 3-master Redis Cluster",
            f"{on_cluster[0]:.0f} B",
            "",
            "",
            "<= 64 B",
            on_cluster[0] <= 64,
        ),
        Row("Redis bytes per pending event", f"{one[1]:.0f} B", "", "", "<= 512 B", one[1] <= 512),
    ]
    return rows, notes
