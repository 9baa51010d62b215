"""Freshness: event -> visible in the read API, at a sustained 1,000 events/s (web + worker)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from typing import Any

import orjson

from app.lua import SLOT_MS
from bench.common import (
    GROUPS,
    PY,
    ROOT,
    Row,
    bench_settings,
    body_template,
    cpu_seconds,
    create_tenant,
    fmt_ms,
    log,
    private_redis,
    process_env,
    run_measured,
    running,
)
from bench.ingest import CONNECTIONS, RATE, serve
from tests.support import READER_TOKEN


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """One retry (fresh Redis, web and worker) if a run goes wrong; the failure is noted."""
    try:
        return attempt(quick, time_ms)
    except RuntimeError as exc:
        log(f"freshness: run failed ({exc}); retrying once with fresh processes")
        rows, notes = attempt(quick, time_ms)
        return rows, [*notes, f"first attempt failed and was repeated: {exc}"]


def attempt(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """Resolved events of new chats at RATE/s; poll the counts every 20 ms."""
    seconds = 5.0 if quick else 15.0
    with private_redis() as server:
        assert server.proc is not None
        settings = bench_settings(server.url)
        tenant = create_tenant(settings)
        env = process_env(settings)
        worker_args = [PY, "-m", "app.cli", "worker"]
        with (
            serve("real", settings) as (port, web_pid),
            running(worker_args, env, "worker") as worker,
        ):
            slot = time_ms // SLOT_MS * SLOT_MS
            read_path = (
                f"/v1/integrations/{tenant.iid}/contacts?from={_iso(slot)}"
                f"&to={_iso(slot + SLOT_MS)}&interval=15"
            )
            warm = {
                "templates": [list(body_template("assigned", time_ms, GROUPS[0]))],
                "duration_s": 2.0,
            }
            resolved = [list(body_template("resolved", time_ms, GROUPS[1]))]
            log("freshness: warm-up (non-terminal events), then resolved events")
            _client(port, tenant.api_key, 1, warm)
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            pids = (web_pid, worker.pid, server.proc.pid)
            before = [cpu_seconds(p) for p in pids]
            result, client_cpu, wall = _client(
                port,
                tenant.api_key,
                2,
                {
                    "templates": resolved,
                    "duration_s": seconds,
                    "read_path": read_path,
                    "reader_token": READER_TOKEN,
                    "poll_interval_s": 0.02,
                    "settle_s": 10.0,
                },
            )
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            web, work, red = (
                100 * (cpu_seconds(p) - b) / wall for p, b in zip(pids, before, strict=True)
            )
    accepted = result["statuses"].get("202", 0)
    if result["fresh_missing"] or result["final_total"] != accepted:
        raise RuntimeError(f"freshness: {accepted} accepted, counts show {result['final_total']}")
    notes = [
        f"{accepted:,} resolved events of new chats at {result['achieved_rate']:,.0f}/s for"
        f" {seconds:g} s; read API polled every 20 ms ({result['polls']} polls,"
        f" {result['poll_errors']} failed) through the same web process;"
        f" CPU: client {client_cpu:.0f}%, web {web:.0f}%, worker {work:.0f}%,"
        f" redis {red:.0f}% of a core",
        f"ingest latency during this run (worker draining): p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.0f} ms",
    ]
    rows = [
        Row(
            f"Freshness p99 at {RATE:,} events/s",
            fmt_ms(result["fresh_p99_ms"]),
            "",
            "",
            "<= 1 s",
            result["fresh_p99_ms"] <= 1000,
        ),
        Row("  p50 / max", f"{fmt_ms(result['fresh_p50_ms'])} / {fmt_ms(result['fresh_max_ms'])}"),
        Row(
            "  applied_through lag p99",
            fmt_ms(result["lag_p99_ms"]),
            "",
            "",
            "<= 1 s",
            result["lag_p99_ms"] <= 1000,
        ),
        Row(
            "  ingest p99 while the worker drains",
            fmt_ms(result["p99_ms"]),
            "",
            "",
            "<= 25 ms",
            result["p99_ms"] <= 25,
        ),
    ]
    return rows, notes


def _client(
    port: int, api_key: str, seed: int, extra: dict[str, Any]
) -> tuple[dict[str, Any], float, float]:
    config = {
        "port": port,
        "rate": RATE,
        "connections": CONNECTIONS,
        "api_key": api_key,
        "seed": seed,
        **extra,
    }
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as f:
        f.write(orjson.dumps(config))
        f.flush()
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
        done = run_measured(
            [PY, "-m", "bench.loadgen", f.name], env, timeout=float(extra["duration_s"]) + 60
        )
    if done.returncode != 0:
        raise RuntimeError("load generator failed")
    return orjson.loads(done.stdout), 100 * done.cpu_s / done.wall_s, done.wall_s
