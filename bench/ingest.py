"""Ingest: throughput (wrk, 32 connections) and latency at 1,000 req/s, real vs baselines."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.settings import Settings
from bench.common import (
    EVENTS_PATH,
    PY,
    ROOT,
    Row,
    Tenant,
    bench_settings,
    cpu_seconds,
    create_tenant,
    fmt_ms,
    fmt_rate,
    free_port,
    log,
    mixed_templates,
    private_redis,
    process_env,
    run_measured,
    running,
    stream_key,
    wait_port,
)

UVICORN_FLAGS = ("--no-access-log", "--log-level", "warning", "--proxy-headers")
CONNECTIONS = 32
BARE_TARGET = 0.8  # §10: real >= 0.8 x the bare endpoint
RATE = 1000


@dataclass(frozen=True)
class Load:
    """What a load generator measured, with its own CPU use and the server's."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int
    gen_cpu_pct: float
    server_cpu_pct: float
    redis_cpu_pct: float
    extra: dict[str, Any]


def server_args(kind: str, port: int) -> list[str]:
    """The same uvicorn set-up for all three: one process, no access log."""
    if kind == "real":
        return [PY, "-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(port)]
    app = {
        "bare": "bench.bare:bare_app",
        "bare-raw": "bench.bare:bare_raw_app",
        "naive": "bench.baselines:naive_app",
    }[kind]
    host = ["--host", "127.0.0.1", "--port", str(port)]
    return [PY, "-m", "uvicorn", app, *host, *UVICORN_FLAGS]


@contextmanager
def serve(kind: str, settings: Settings, api_key: str = "") -> Iterator[tuple[int, int]]:
    """Start one web process of the kind (bare checks `api_key`); yields (port, pid)."""
    port = free_port()
    env = process_env(settings, BENCH_API_KEY=api_key)
    with running(server_args(kind, port), env, f"{kind} web") as proc:
        wait_port(port, proc, f"{kind} web")
        yield port, proc.pid


def wrk_script(api_key: str, templates: Sequence[tuple[str, str]], seed: int) -> str:
    """A wrk script posting a chat's new/assigned/resolved payloads with fresh chat ids."""
    bodies = ",\n".join(f"  {{[==[{p}]==], [==[{s}]==]}}" for p, s in templates)
    return f"""
local bodies = {{
{bodies}
}}
local headers = {{
  ["Authorization"] = "Bearer {api_key}",
  ["Content-Type"] = "application/json",
}}
local thread_no = 0
local counter = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end
function request()
  counter = counter + 1
  local b = bodies[(counter % {len(templates)}) + 1]
  local n = math.floor(counter / {len(templates)})
  local chat = string.format("%08x-0000-4000-8000-%012x", tid + 4096 * {seed}, n)
  return wrk.format("POST", "{EVENTS_PATH}", headers, b[1] .. chat .. b[2])
end
"""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    port: int,
    script: Path,
    seconds: float,
    server_pid: int,
    redis_pid: int,
    connections: int = CONNECTIONS,
) -> Load:
    """wrk -t2 -c32 with latency percentiles; CPU of wrk, the server and Redis."""
    args = [
        "wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
        "-s", str(script), f"http://127.0.0.1:{port}{EVENTS_PATH}",
    ]  # fmt: skip
    s0, r0 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
    done = run_measured(args, {"PATH": "/usr/bin:/bin"}, timeout=seconds + 30)
    s1, r1 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
    out = done.stdout.decode()
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: (.*)", out)
    extra = {"socket_errors": socket_errors.group(1)} if socket_errors else {}
    wall = done.wall_s
    return Load(
        rps,
        _ms(pct.get("50", "")),
        _ms(pct.get("99", "")),
        requests,
        bad,
        100 * done.cpu_s / wall,
        100 * (s1 - s0) / wall,
        100 * (r1 - r0) / wall,
        extra,
    )


def fixed_rate(
    port: int,
    tenant: Tenant | None,
    templates: Sequence[tuple[str, str]],
    seconds: float,
    server_pid: int,
    redis_pid: int,
    seed: int,
    **extra: Any,
) -> Load:
    """The Python open-loop client at RATE req/s; CPU of the client, the server and Redis."""
    config = {
        "port": port,
        "rate": RATE,
        "duration_s": seconds,
        "connections": CONNECTIONS,
        "templates": [list(t) for t in templates],
        "api_key": tenant.api_key if tenant else "none",
        "seed": seed,
        **extra,
    }
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as f:
        f.write(orjson.dumps(config))
        f.flush()
        s0, r0 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
        done = run_measured([PY, "-m", "bench.loadgen", f.name], _env(), timeout=seconds + 60)
        s1, r1 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
    if done.returncode != 0:
        raise RuntimeError("load generator failed")
    result: dict[str, Any] = orjson.loads(done.stdout)
    bad = sum(v for k, v in result["statuses"].items() if k != "202")
    wall = done.wall_s
    return Load(
        result["achieved_rate"],
        result["p50_ms"],
        result["p99_ms"],
        result["sent"],
        bad,
        100 * done.cpu_s / wall,
        100 * (s1 - s0) / wall,
        100 * (r1 - r0) / wall,
        result,
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _check(kind: str, load: Load) -> None:
    if load.bad or load.extra.get("socket_errors"):
        log(f"WARNING {kind}: {load.bad} non-202 answers, {load.extra.get('socket_errors', '')}")


def measure(quick: bool, time_ms: int) -> tuple[list[Row], list[str]]:
    """Throughput at 32 connections and latency at 1,000 req/s for real, bare and naive.

    The servers take turns (bare, real, naive, bare-raw; twice in a full run) and the best
    round of each counts, so a burst of load from other users hits all of them alike.
    """
    seconds, warm, fixed_s, rounds = (4.0, 1.0, 4.0, 1) if quick else (10.0, 2.0, 10.0, 2)
    templates = mixed_templates(time_ms)
    tries: dict[str, list[Load]] = {}
    lat: dict[str, Load] = {}
    notes: list[str] = []
    seed = 1
    kinds = ("bare", "real", "naive", "bare-raw")
    plan = [("none", kind) for _ in range(rounds) for kind in kinds]
    plan.append(("always", "real"))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        for persistence in ("none", "always"):
            with private_redis(None if persistence == "none" else "always") as server:
                assert server.proc is not None
                settings = bench_settings(server.url)
                redis = server.client()
                for kind in (k for p, k in plan if p == persistence):
                    label = kind if persistence == "none" else "real-fsync"
                    tenant = create_tenant(settings)
                    with serve(kind, settings, tenant.api_key) as (port, pid):
                        log(f"ingest: {label} warm-up + wrk {seconds:g} s")
                        seed += 1
                        script.write_text(wrk_script(tenant.api_key, templates, seed))
                        run_wrk(port, script, warm, pid, server.proc.pid)
                        seed += 1
                        script.write_text(wrk_script(tenant.api_key, templates, seed))
                        load = run_wrk(port, script, seconds, pid, server.proc.pid)
                        _check(label, load)
                        tries.setdefault(label, []).append(load)
                        if persistence == "none" and label not in lat and label != "bare-raw":
                            log(f"ingest: {label} at {RATE} req/s for {fixed_s:g} s")
                            seed += 1
                            lat[label] = fixed_rate(
                                port, tenant, templates, fixed_s, pid, server.proc.pid, seed
                            )
                            _check(label + " fixed-rate", lat[label])
                    if kind == "real":
                        stored = int(redis.xlen(stream_key(settings, tenant.shard)))
                        notes.append(
                            f"{label} round {len(tries[label])}: {stored:,} events stored"
                            " (warm-up + wrk run + the fixed-rate run in round 1)"
                        )
                    redis.flushall()
    loads = {label: max(runs, key=lambda r: r.rps) for label, runs in tries.items()}
    for label, runs in tries.items():
        if len(runs) > 1:
            each = ", ".join(f"{r.rps:,.0f}" for r in runs)
            notes.append(f"wrk rounds {label}: {each} req/s (best used)")
    return _rows(loads, lat), notes + _load_notes(loads, lat)


def _rows(loads: dict[str, Load], lat: dict[str, Load]) -> list[Row]:
    real, bare, naive = loads["real"], loads["bare"], loads["naive"]
    rows = [
        Row("Ingest throughput, 32 conns (real)", fmt_rate(real.rps)),
        Row(
            "  vs bare endpoint (model_validate_json)",
            fmt_rate(real.rps),
            fmt_rate(bare.rps),
            f"{real.rps / bare.rps:.2f}x",
            f">= {BARE_TARGET}x",
            real.rps / bare.rps >= BARE_TARGET,
        ),
        Row(
            "  vs naive enqueue-per-request",
            fmt_rate(real.rps),
            fmt_rate(naive.rps),
            f"{real.rps / naive.rps:.1f}x",
            ">= 6x",
            real.rps / naive.rps >= 6,
        ),
        Row(
            "  p50 / p99 at 32 conns (real)",
            f"{fmt_ms(real.p50_ms)} / {fmt_ms(real.p99_ms)}",
            f"bare {fmt_ms(bare.p50_ms)} / {fmt_ms(bare.p99_ms)}",
        ),
        Row("", "", f"naive {fmt_ms(naive.p50_ms)} / {fmt_ms(naive.p99_ms)}"),
    ]
    raw = loads.get("bare-raw")
    if raw:
        rows.append(
            Row(
                "  vs bare, served as plain ASGI too",
                fmt_rate(real.rps),
                fmt_rate(raw.rps),
                f"{real.rps / raw.rps:.2f}x",
                "(info)",
            )
        )
    fsync = loads.get("real-fsync")
    if fsync:
        rows.append(
            Row(
                "  real, Redis appendfsync always",
                fmt_rate(fsync.rps),
                fmt_rate(bare.rps),
                f"{fsync.rps / bare.rps:.2f}x",
                "(info)",
            )
        )
    r = lat["real"]
    rows += [
        Row(
            f"Ingest p99 at {RATE:,} req/s (real)",
            fmt_ms(r.p99_ms),
            f"bare {fmt_ms(lat['bare'].p99_ms)}",
            f"{r.p99_ms / lat['bare'].p99_ms:.1f}x",
            "<= 25 ms",
            r.p99_ms <= 25,
        ),
        Row(
            "  p50 (real)",
            fmt_ms(r.p50_ms),
            f"naive p99 {fmt_ms(lat['naive'].p99_ms)}",
        ),
    ]
    return rows


def _load_notes(loads: dict[str, Load], lat: dict[str, Load]) -> list[str]:
    notes = []
    for label, load in loads.items():
        notes.append(
            f"wrk vs {label}: wrk CPU {load.gen_cpu_pct:.0f}% of a core, web process "
            f"{load.server_cpu_pct:.0f}%, redis {load.redis_cpu_pct:.0f}%; "
            f"{load.requests:,} requests, {load.bad} non-2xx"
        )
    for label, load in lat.items():
        notes.append(
            f"{RATE} req/s client vs {label}: client CPU {load.gen_cpu_pct:.0f}%, web "
            f"{load.server_cpu_pct:.0f}%, redis {load.redis_cpu_pct:.0f}%; achieved "
            f"{load.rps:,.0f} req/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
            f"{load.bad} non-202"
        )
    return notes
