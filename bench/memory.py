"""Memory: Redis bytes per tracked chat and per pending event (UUID chat ids)."""

from __future__ import annotations

import random

from redis import Redis

from app.compact import Compact, Kind, chat_key
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


def used_memory(redis: Redis) -> int:
    """INFO memory used_memory (allocator bytes, what maxmemory is compared with)."""
    return int(redis.info("memory")["used_memory"])


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """XADD n terminal events of distinct UUID chats, then apply them; bytes per item."""
    n = 50_000 if quick else 100_000
    rng = random.Random(42)
    with private_redis() as server:
        settings = bench_settings(server.url)
        redis = server.client()
        tenant = create_tenant(settings)
        stream = stream_key(settings, tenant.shard)

        def events(count: int) -> list[bytes]:
            out = []
            for _ in range(count):
                gid, gname = GROUPS[rng.randrange(len(GROUPS))]
                kind = Kind.DELETED if rng.random() < 0.1 else Kind.SOLVED
                t = time_ms - rng.randrange(86_400_000)
                c = Compact(
                    chat=chat_key(uuid_of(rng)),
                    kind=kind,
                    time_ms=t,
                    group_id=gid,
                    group_name=gname,
                )
                out.append(c.encode(tenant.iid))
            return out

        # Warm-up: scripts loaded, per-integration hashes (groups, queues) created.
        warm = events(1000)
        xadd_all(redis, stream, warm)
        run_drain(settings, tenant.shard, len(warm))
        log(f"memory: {n:,} pending events, then {n:,} tracked chats")
        batch = events(n)
        base = used_memory(redis)
        xadd_all(redis, stream, batch)
        pending = (used_memory(redis) - base) / n
        run_drain(settings, tenant.shard, n)
        per_chat = (used_memory(redis) - base) / n
        if counted(redis, settings, tenant.shard) != n + len(warm):
            raise RuntimeError("memory: counts do not match the chats applied")
        sample = redis.scan(0, match=f"{settings.key_prefix}:{{{tenant.shard}}}:c:*", count=100)[1][
            0
        ]
        key_usage = int(redis.memory_usage(sample, samples=0) or 0)
    notes = [
        f"used_memory delta over {n:,} items (one integration, 12 groups, times over one day);"
        f" MEMORY USAGE of one chat key: {key_usage} B (+ expire-dict entry)"
    ]
    rows = [
        Row(
            "Redis bytes per tracked chat", f"{per_chat:.0f} B", "", "", "<= 160 B", per_chat <= 160
        ),
        Row(
            "Redis bytes per pending event", f"{pending:.0f} B", "", "", "<= 512 B", pending <= 512
        ),
    ]
    return rows, notes
