"""Ingest CPU per request without an HTTP server: where the real endpoint's time goes.

    .venv/bin/python -m bench.inprocess [--requests N] [--off store,log,metrics] [--profile]

Drives each ASGI app (bare, bare served as plain ASGI, real) with 32 concurrent tasks on
uvloop against a private Redis and prints the process CPU per request. `--off` switches
parts of the real endpoint off (store: the group commit answers at once without Redis;
log: no request line; metrics: no accepted counter), which is how the breakdown in
bench/RESULTS.md was measured; `--profile` prints a cProfile of the real run. A diagnostic
beside `bench/run`, not a §10 figure: it leaves out uvicorn and the client.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import MutableMapping
from typing import Any

import uvloop
from starlette.types import ASGIApp

from app.main import create_app
from bench import baselines
from bench.common import EVENTS_PATH, bench_settings, create_tenant, mixed_templates, private_redis

CONCURRENCY = 32


def _bodies(count: int) -> list[bytes]:
    templates = mixed_templates(int(time.time() * 1000))
    out = []
    run_id = time.monotonic_ns() % 10**12
    for i in range(count):
        prefix, suffix = templates[i % len(templates)]
        out.append(f"{prefix}{i:08x}-0000-4000-8000-{run_id:012x}{suffix}".encode())
    return out


async def drive(app: ASGIApp, api_key: str, requests: int) -> float:
    """Post `requests` bodies over 32 tasks; CPU µs per request (every answer must be 202)."""
    bodies = _bodies(3000)
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
            i += CONCURRENCY
            await asyncio.sleep(0)  # each request is its own task under a server

    started = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return (time.process_time() - started) / requests * 1e6


def switch_off(parts: set[str]) -> None:
    """Replace parts of the real endpoint with no-ops (diagnostic only)."""
    import app.ingest
    import app.logs
    from app.lua import STORED_OK, StoreOutcome

    if "store" in parts:

        async def stored(self: app.ingest.Ingest, cred: Any, encoded: Any) -> StoreOutcome:
            return STORED_OK

        app.ingest.Ingest._store = stored  # type: ignore[method-assign]
    if "log" in parts:
        app.logs.RequestLines._queue = lambda self, fields: None  # type: ignore[method-assign]
    if "metrics" in parts:
        app.ingest.count_accepted = lambda accepted, ignored: None  # type: ignore[attr-defined]


async def run(kind: str, url: str, api_key: str, requests: int, profile: bool) -> float:
    """Warm up, then measure one app."""
    if kind != "real":
        app: Any = baselines.bare_app if kind == "bare" else baselines.bare_raw_app
        await drive(app, api_key, 2000)
        return await drive(app, api_key, requests)
    real = create_app(bench_settings(url))
    async with real.router.lifespan_context(real):
        await drive(real, api_key, 2000)
        if not profile:
            return await drive(real, api_key, requests)
        profiler = cProfile.Profile()
        profiler.enable()
        result = await drive(real, api_key, requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return result


def main() -> None:
    """Print CPU per request for bare, bare-raw and real (twice each, interleaved)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--off", default="", help="comma-separated: store, log, metrics")
    parser.add_argument("--profile", action="store_true", help="cProfile the real runs")
    args = parser.parse_args()
    off = {p.strip() for p in args.off.split(",") if p.strip()}
    unknown = off - {"store", "log", "metrics"}
    if unknown:
        parser.error(f"unknown part(s) for --off: {', '.join(sorted(unknown))}")
    switch_off(off)
    with private_redis() as server:
        settings = bench_settings(server.url)
        tenant = create_tenant(settings)
        suffix = f" (off: {','.join(sorted(off))})" if off else ""
        for _ in range(2):
            for kind in ("bare", "bare-raw", "real"):
                measured = run(kind, server.url, tenant.api_key, args.requests, args.profile)
                cost = uvloop.run(measured)
                label = kind + (suffix if kind == "real" else "")
                print(f"{label:<32} {cost:6.1f} us CPU per request", flush=True)


if __name__ == "__main__":
    main()
