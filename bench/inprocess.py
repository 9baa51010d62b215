"""Ingest CPU per request without an HTTP server: where the real endpoint's time goes.

    .venv/bin/python -m bench.inprocess [--requests N] [--batch 500] [--off store,log,metrics]
                                        [--profile] [--gc]

Drives each ASGI app (bare, bare served as plain ASGI, real) with 32 concurrent tasks (8
with `--batch`) on uvloop against a private Redis and prints the process CPU per request
and per event. `--batch N` posts arrays of N ~2.5 KB events instead of single ~1.8 KB ones.
`--off` switches parts of the real endpoint off (store: the group commit answers at once
without Redis; log: no request line; metrics: no accepted counter), which is how the
breakdown in bench/RESULTS.md was measured; `--profile` prints a cProfile of the real run,
`--gc` the garbage collections during it. A diagnostic beside `bench/run`, not a §10
figure: it leaves out uvicorn and the client.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvloop
from starlette.types import ASGIApp

from app.main import create_app
from bench import bare
from bench.common import (
    EVENTS_PATH,
    batch_body,
    bench_settings,
    create_tenant,
    mixed_templates,
    private_redis,
)

CONCURRENCY = 32
BATCH_CONCURRENCY = 8
BATCH_BODIES = 40  # distinct batch bodies (~50 MB at 500 events): chat ids seldom repeat


def _bodies(count: int) -> list[bytes]:
    templates = mixed_templates(int(time.time() * 1000))
    out = []
    run_id = time.monotonic_ns() % 10**12
    for i in range(count):
        prefix, suffix = templates[i % len(templates)]
        out.append(f"{prefix}{i:08x}-0000-4000-8000-{run_id:012x}{suffix}".encode())
    return out


def _batches(events: int) -> list[bytes]:
    templates = mixed_templates(int(time.time() * 1000), indent=True)
    tag = time.monotonic_ns() % 2**31
    return [batch_body(templates, events, k * events, tag) for k in range(BATCH_BODIES)]


@dataclass
class GcLog:
    """Collections per generation and their wall time, while `on`."""

    on: bool = False
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.counts[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self.started

    def report(self, requests: int) -> str:
        """Collections and ms per request, per generation."""
        return ", ".join(
            f"gen{g} {n / requests:.2f}/req {1000 * s / requests:.2f} ms/req"
            for g, (n, s) in enumerate(zip(self.counts, self.seconds, strict=True))
        )


GC_LOG = GcLog()


async def drive(app: ASGIApp, api_key: str, requests: int, batch: int = 0) -> float:
    """Post `requests` bodies over 32 tasks (8 for batches); CPU µs per request (all 202)."""
    bodies = _batches(batch) if batch else _bodies(3000)
    concurrency = BATCH_CONCURRENCY if batch else CONCURRENCY
    auth = b"Bearer " + api_key.encode()
    done = 0

    async def one(body: bytes) -> None:
        headers = [
            (b"authorization", auth),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": EVENTS_PATH,
            "raw_path": EVENTS_PATH.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            "state": {},
        }  # fmt: skip
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [202]:
            raise RuntimeError(f"expected a 202, got {statuses}")

    async def worker(first: int) -> None:
        nonlocal done
        i = first
        while done < requests:
            done += 1
            await one(bodies[i % len(bodies)])
            i += concurrency
            await asyncio.sleep(0)  # each request is its own task under a server

    started = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return (time.process_time() - started) / requests * 1e6


def switch_off(parts: set[str]) -> None:
    """Replace parts of the real endpoint with no-ops (diagnostic only)."""
    import app.ingest
    import app.logs
    from app.lua import STORED_OK, StoreOutcome

    if "store" in parts:

        async def stored(self: app.ingest.Ingest, cred: Any, *rest: Any) -> StoreOutcome:
            return STORED_OK

        app.ingest.Ingest.store = stored  # type: ignore[method-assign,assignment]
    if "log" in parts:
        app.logs.RequestLines._queue = lambda self, fields: None  # type: ignore[method-assign]
    if "metrics" in parts:
        app.ingest.count_accepted = lambda accepted, ignored: None  # type: ignore[attr-defined]


async def run(kind: str, url: str, api_key: str, requests: int, batch: int, profile: bool) -> float:
    """Warm up, then measure one app."""
    warm = max(20, requests // 10) if batch else 2000
    if kind != "real":
        app: Any = bare.bare_app if kind == "bare" else bare.bare_raw_app
        await drive(app, api_key, warm, batch)
        return await drive(app, api_key, requests, batch)
    real = create_app(bench_settings(url))
    async with real.router.lifespan_context(real):
        await drive(real, api_key, warm, batch)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        GC_LOG.on = True
        result = await drive(real, api_key, requests, batch)
        GC_LOG.on = False
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return result


def main() -> None:
    """Print CPU per request for bare, bare-raw and real (twice each, interleaved)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, help="requests per run (20,000; 200 batches)")
    parser.add_argument("--batch", type=int, default=0, help="events per body (0: single)")
    parser.add_argument("--off", default="", help="comma-separated: store, log, metrics")
    parser.add_argument("--profile", action="store_true", help="cProfile the real runs")
    parser.add_argument("--gc", action="store_true", help="garbage collections of real runs")
    args = parser.parse_args()
    requests = args.requests or (200 if args.batch else 20_000)
    if args.gc:
        gc.callbacks.append(GC_LOG)
    off = {p.strip() for p in args.off.split(",") if p.strip()}
    unknown = off - {"store", "log", "metrics"}
    if unknown:
        parser.error(f"unknown part(s) for --off: {', '.join(sorted(unknown))}")
    switch_off(off)
    with private_redis() as server:
        settings = bench_settings(server.url)
        tenant = create_tenant(settings)
        os.environ["BENCH_API_KEY"] = tenant.api_key  # the bare endpoints' Bearer key
        suffix = f" (off: {','.join(sorted(off))})" if off else ""
        per = max(args.batch, 1)
        for _ in range(2):
            for kind in ("bare", "bare-raw", "real"):
                GC_LOG.counts, GC_LOG.seconds = [0, 0, 0], [0.0, 0.0, 0.0]
                measured = run(kind, server.url, tenant.api_key, requests, args.batch, args.profile)
                cost = uvloop.run(measured)
                label = kind + (suffix if kind == "real" else "")
                line = f"{label:<32} {cost:8.1f} us CPU per request"
                if args.batch:
                    line += f", {cost / per:5.2f} us per event ({per / cost * 1e6:,.0f} events/s)"
                if args.gc and kind == "real":
                    line += f"; {GC_LOG.report(requests)}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
