"""Batch ingest (§10): 500-event bodies into one web process, events/s, real vs bare.

wrk builds every body itself from the three payload templates (~2.5 KB each, indented as
the Freshworks samples are: a 500-event body is ~1.3 MB) with fresh chat ids, 8
connections; the real endpoint and the bare one take turns and the best round counts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    EVENTS_PATH,
    Row,
    batch_body,
    bench_settings,
    create_tenant,
    fmt_ms,
    fmt_rate,
    log,
    mixed_templates,
    private_redis,
    stream_key,
)
from bench.ingest import Load, run_wrk, serve

EVENTS = 500  # per body, the §3 maximum
CONNECTIONS = 8  # replays and backfills: a few senders at a time
TARGET = 50_000  # events/s (§10)


def wrk_batch_script(api_key: str, templates: Sequence[tuple[str, str]], seed: int) -> str:
    """A wrk script posting JSON arrays of EVENTS payloads, every chat id fresh."""
    bodies = ",\n".join(f"  {{[==[{p}]==], [==[{s}]==]}}" for p, s in templates)
    return f"""
local templates = {{
{bodies}
}}
local headers = {{
  ["Authorization"] = "Bearer {api_key}",
  ["Content-Type"] = "application/json",
}}
local thread_no = 0
local sent = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end
function request()
  local parts = {{"["}}
  for i = 1, {EVENTS} do
    local t = templates[(sent % {len(templates)}) + 1]
    local n = math.floor(sent / {len(templates)})
    local chat = string.format("%08x-0000-4000-8000-%012x", tid + 4096 * {seed}, n)
    if i > 1 then parts[#parts + 1] = "," end
    parts[#parts + 1] = t[1]
    parts[#parts + 1] = chat
    parts[#parts + 1] = t[2]
    sent = sent + 1
  end
  parts[#parts + 1] = "]"
  return wrk.format("POST", "{EVENTS_PATH}", headers, table.concat(parts))
end
"""


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """Real and bare in turns (twice in a full run); events/s of the best round of each."""
    seconds, warm, rounds = (4.0, 1.0, 1) if quick else (10.0, 2.0, 2)
    templates = mixed_templates(time_ms, indent=True)
    size = len(batch_body(templates, EVENTS, 0, 0))
    tries: dict[str, list[Load]] = {}
    notes: list[str] = []
    seed = 1
    with tempfile.TemporaryDirectory() as tmp, private_redis() as server:
        assert server.proc is not None
        script = Path(tmp) / "batch.lua"
        settings = bench_settings(server.url)
        redis = server.client()
        for kind in [k for _ in range(rounds) for k in ("bare", "real")]:
            tenant = create_tenant(settings)
            with serve(kind, settings, tenant.api_key) as (port, pid):
                log(f"batch: {kind} warm-up + wrk {seconds:g} s, {EVENTS}-event bodies")
                for duration in (warm, seconds):
                    seed += 1
                    script.write_text(wrk_batch_script(tenant.api_key, templates, seed))
                    load = run_wrk(port, script, duration, pid, server.proc.pid, CONNECTIONS)
                if load.bad or load.extra.get("socket_errors"):
                    log(f"WARNING batch {kind}: {load.bad} non-2xx, {load.extra}")
                tries.setdefault(kind, []).append(load)
            if kind == "real":
                stored = int(redis.xlen(stream_key(settings, tenant.shard)))
                notes.append(f"real round {len(tries[kind])}: {stored:,} events stored")
            redis.flushall()
    best = {kind: max(runs, key=lambda r: r.rps) for kind, runs in tries.items()}
    for kind, runs in tries.items():
        rates = ", ".join(fmt_rate(r.rps * EVENTS) for r in runs)
        notes.append(f"{kind} rounds: {rates} events (best used)")
        b = best[kind]
        notes.append(
            f"wrk vs {kind}: wrk CPU {b.gen_cpu_pct:.0f}% of a core (it builds the bodies),"
            f" web process {b.server_cpu_pct:.0f}%, redis {b.redis_cpu_pct:.0f}%;"
            f" {b.requests:,} bodies, {b.bad} non-2xx"
        )
    notes.append(f"a body: {EVENTS} events, {size:,} bytes ({size / EVENTS:,.0f} B per event)")
    return _rows(best), notes


def _rows(best: dict[str, Load]) -> list[Row]:
    real, bare = best["real"], best["bare"]
    rate, bare_rate = real.rps * EVENTS, bare.rps * EVENTS
    return [
        Row(
            f"Batch ingest, {EVENTS}-event bodies (real)",
            fmt_rate(rate),
            "",
            "",
            f">= {TARGET:,}/s",
            rate >= TARGET,
        ),
        Row(
            "  vs bare endpoint, same bodies",
            fmt_rate(rate),
            fmt_rate(bare_rate),
            f"{rate / bare_rate:.2f}x",
            "(info)",
        ),
        Row(
            f"  p50 / p99 per body, {CONNECTIONS} conns",
            f"{fmt_ms(real.p50_ms)} / {fmt_ms(real.p99_ms)}",
            f"bare {fmt_ms(bare.p50_ms)} / {fmt_ms(bare.p99_ms)}",
        ),
    ]
