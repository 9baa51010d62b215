"""Processing: one worker process draining a mixed stream vs one RQ job per event."""

from __future__ import annotations

import random
from typing import Any, cast

import orjson
from redis import Redis
from rq import Queue

from app.settings import Settings
from bench.baselines import NAIVE_QUEUE, naive_job, naive_total
from bench.common import (
    GROUPS,
    PY,
    DrainRun,
    Row,
    bench_settings,
    counted,
    create_tenant,
    fmt_rate,
    log,
    mixed_compacts,
    private_redis,
    process_env,
    run_drain,
    run_measured,
    stream_key,
    terminal_chats,
    uuid_of,
    xadd_all,
)
from tests.redis_cluster import RedisClusterHarness
from tests.support import conv_event


def naive_payloads(n: int, seed: int, start_ms: int) -> list[dict[str, Any]]:
    """The same mix as the stream, as the payloads the naive endpoint enqueues."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        chat = uuid_of(rng)
        group = GROUPS[rng.randrange(len(GROUPS))]
        t = start_ms + rng.randrange(86_400_000)
        for status, g, dt in (
            ("new", None, 0),
            ("assigned", group, 60_000),
            ("resolved", group, 600_000),
        ):
            payload = conv_event(
                chat, status, t + dt, g, resolved_time_ms=t + dt if status == "resolved" else None
            )
            payload.pop("iparams")
            out.append(payload)
    del out[n:]
    rng.shuffle(out)
    return out


def naive_rate(redis: Redis, settings: Settings, kind: str, n: int, start_ms: int) -> float:
    """Enqueue n naive jobs, work them with one RQ worker in burst mode; events/s."""
    redis.flushall()
    queue = Queue(NAIVE_QUEUE, connection=redis)
    payloads = naive_payloads(n, 7, start_ms)
    with redis.pipeline() as pipe:
        queue.enqueue_many([Queue.prepare_data(naive_job, (p,)) for p in payloads], pipeline=pipe)
        pipe.execute()
    done = run_measured([PY, "-m", "bench.rqworker", kind], process_env(settings), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"naive {kind} worker failed")
    result = orjson.loads(done.stdout)
    if result["finished"] != n or result["failed"]:
        raise RuntimeError(f"naive {kind} worker: {result}")
    expected = sum(1 for p in payloads if p["data"]["conversation"]["status"] == "resolved")
    counted = naive_total(redis)
    if counted != expected:
        raise RuntimeError(f"naive jobs counted {counted}, expected {expected}")
    return n / float(result["seconds"])


def cluster_runs(n: int, start_ms: int) -> list[DrainRun]:
    """The same real drain with the data on a 3-master Redis Cluster (§14), RQ apart."""
    with RedisClusterHarness(masters=3) as cluster, private_redis() as rq:
        settings = bench_settings(cluster.url, redis_cluster=True, rq_redis_url=rq.url)
        client = cast(Redis, cluster.client())
        runs = []
        for rep in range(3):
            cluster.flush()
            tenant = create_tenant(settings)
            log(f"processing: real drain of {n:,} events on a cluster (run {rep + 1} of 3)")
            encoded = mixed_compacts(n, [tenant.iid], 100 + rep, start_ms)
            stream = stream_key(settings, tenant.shard)
            xadd_all(client, stream, encoded)
            owner = cluster.procs[cluster.master_for_key(stream)]
            runs.append(run_drain(settings, tenant.shard, n, owner.pid))
            if counted(client, settings, tenant.shard) != terminal_chats(encoded):
                raise RuntimeError("real drain on the cluster: counts do not match")
        client.close()
    return runs


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """Events per second of the real drain and of both naive workers."""
    n_real, n_simple, n_fork = (60_000, 600, 40) if quick else (300_000, 3_000, 200)
    start_ms = time_ms - 2 * 86_400_000
    notes: list[str] = []
    with private_redis() as server:
        settings = bench_settings(server.url)
        redis = server.client()
        tenant = create_tenant(settings)
        runs = []
        for rep in range(3):
            log(f"processing: real drain of {n_real:,} events (run {rep + 1} of 3)")
            encoded = mixed_compacts(n_real, [tenant.iid], 100 + rep, start_ms)
            xadd_all(redis, stream_key(settings, tenant.shard), encoded)
            assert server.proc is not None
            runs.append(run_drain(settings, tenant.shard, n_real, server.proc.pid))
            expected = terminal_chats(encoded)
            if counted(redis, settings, tenant.shard) != expected:
                raise RuntimeError(f"real drain: counts do not sum to {expected}")
            redis.flushall()
            tenant = create_tenant(settings)
        best = max(runs, key=lambda r: r.rate)
        notes.append(
            "real drain, three runs: "
            + ", ".join(f"{r.rate:,.0f}/s" for r in runs)
            + f" (best used); {best.seconds:.2f} s drain: worker process CPU {best.cpu_s:.2f} s"
            + f" (incl. start-up), redis CPU {best.redis_cpu_s:.2f} s (Lua apply runs there)"
        )
        log(f"processing: naive SimpleWorker, {n_simple:,} jobs")
        simple_runs = [naive_rate(redis, settings, "simple", n_simple // 2, start_ms) for _ in "ab"]
        simple = max(simple_runs)
        log(f"processing: naive forking Worker, {n_fork:,} jobs")
        fork = naive_rate(redis, settings, "fork", n_fork, start_ms)
    notes.append(
        f"naive SimpleWorker: two runs of {n_simple // 2:,} jobs, "
        + ", ".join(f"{r:,.0f}/s" for r in simple_runs)
        + f" (best used); forking Worker over {n_fork} jobs"
    )
    on_cluster = cluster_runs(n_real, start_ms)
    best_cluster = max(on_cluster, key=lambda r: r.rate)
    notes.append(
        "real drain on a local 3-master Redis Cluster (the shard's master on the same 2"
        " cores), three runs: "
        + ", ".join(f"{r.rate:,.0f}/s" for r in on_cluster)
        + f" (best used); redis CPU of the shard's master {best_cluster.redis_cpu_s:.2f} s"
    )
    ratio = best.rate / simple
    rows = [
        Row(
            "Processing, 1 worker, mixed stream",
            fmt_rate(best.rate),
            "",
            "",
            ">= 100,000/s",
            best.rate >= 100_000,
        ),
        Row(
            "  same, data on a 3-master Redis Cluster",
            fmt_rate(best_cluster.rate),
            fmt_rate(best.rate),
            f"{best_cluster.rate / best.rate:.2f}x",
            "(info)",
            True,
        ),
        Row(
            "  vs naive job per event, SimpleWorker",
            fmt_rate(best.rate),
            fmt_rate(simple),
            f"{ratio:,.0f}x",
            ">= 200x",
            ratio >= 200,
        ),
        Row(
            "  vs naive job per event, forking Worker",
            fmt_rate(best.rate),
            f"{fork:,.1f}/s",
            f"{best.rate / fork:,.0f}x",
            "far beyond",
            best.rate / fork >= 200,
        ),
    ]
    return rows, notes
