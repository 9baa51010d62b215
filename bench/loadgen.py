"""Child process: an open-loop HTTP/1.1 load generator at a fixed request rate.

wrk cannot hold a fixed rate (and wrk2 is not packaged in Debian), so this client
schedules request i at t0 + i/rate and measures latency from that *intended* time (no
coordinated omission). Raw asyncio streams on uvloop keep its own CPU use low; the parent
reports that CPU use. In freshness mode it also polls the read API and matches the k-th
accepted event with the first poll showing k contacts, and takes each answer's
`applied_through` lag behind the wall clock.

Usage: python -m bench.loadgen CONFIG.json   (prints a JSON result on stdout)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.common import percentile


@dataclass
class Conn:
    """One keep-alive connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def _connect(port: int) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Conn(reader, writer)


async def _exchange(conn: Conn, request: bytes) -> tuple[int, bytes]:
    conn.writer.write(request)
    head = await conn.reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:  # the read API streams its answers
        return status, await _chunks(conn.reader)
    body = await conn.reader.readexactly(length) if length else b""
    return status, body


async def _chunks(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        parts.append(await reader.readexactly(size + 2))  # the chunk and its CRLF
        if size == 0:
            return b"".join(p[:-2] for p in parts)


def _post(port: int, api_key: str, body: str) -> bytes:
    data = body.encode()
    head = (
        f"POST /v1/freshchat/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@dataclass
class Run:
    """State of one fixed-rate run."""

    config: dict[str, Any]
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: list[tuple[float, float]] = field(default_factory=list)  # (done, intended)
    polls: list[tuple[float, int]] = field(default_factory=list)  # (seen at, total contacts)
    lags: list[tuple[float, float]] = field(default_factory=list)  # (seen at, ms behind)
    sending_until: float = float("inf")
    errors: int = 0
    poll_errors: int = 0

    async def fire(self, pool: asyncio.Queue[Conn], request: bytes, intended: float) -> None:
        """Send one request on a free connection."""
        conn = await pool.get()
        try:
            status, _ = await _exchange(conn, request)
        except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError):
            self.errors += 1
            status = 0
            conn.writer.close()
            try:
                conn = await _connect(self.config["port"])
            except OSError:
                await asyncio.sleep(0.1)  # server gone: keep the broken one, fail fast
        finally:
            pool.put_nowait(conn)
        done = time.perf_counter()
        self.latencies.append(done - intended)
        self.statuses[status] += 1
        if status == 202:
            self.accepted.append((done, intended))

    async def poll(self, stop: asyncio.Event) -> None:
        """Read the counts through the read API until told to stop."""
        cfg = self.config
        conn = await _connect(cfg["port"])
        request = (
            f"GET {cfg['read_path']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {cfg['reader_token']}\r\nAccept: application/json\r\n\r\n"
        ).encode()
        while not stop.is_set():
            try:
                status, body = await _exchange(conn, request)
            except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError):
                self.poll_errors += 1
                conn.writer.close()
                await asyncio.sleep(cfg["poll_interval_s"])
                with contextlib.suppress(OSError):
                    conn = await _connect(cfg["port"])
                continue
            seen, now = time.perf_counter(), time.time()
            if status == 200:
                answer = orjson.loads(body)
                total = sum(int(r["contacts"]) for r in answer["rows"])
                self.polls.append((seen, total))
                through = datetime.fromisoformat(answer["applied_through"]).timestamp()
                self.lags.append((seen, (now - through) * 1000))
            else:
                self.poll_errors += 1
            await asyncio.sleep(cfg["poll_interval_s"])
        conn.writer.close()

    async def main(self) -> dict[str, Any]:
        """Run the schedule and return the summary."""
        cfg = self.config
        port, rate, total = cfg["port"], float(cfg["rate"]), int(cfg["rate"] * cfg["duration_s"])
        templates: list[list[str]] = cfg["templates"]
        pool: asyncio.Queue[Conn] = asyncio.Queue()
        conns = [await _connect(port) for _ in range(cfg["connections"])]
        for conn in conns:
            pool.put_nowait(conn)
        stop = asyncio.Event()
        poller = asyncio.create_task(self.poll(stop)) if cfg.get("read_path") else None
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter() + 0.05
        for i in range(total):
            intended = t0 + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            prefix, suffix = templates[i % len(templates)]
            chat = f"{cfg['seed']:08x}-0000-4000-8000-{i // len(templates):012x}"
            task = asyncio.create_task(
                self.fire(pool, _post(port, cfg["api_key"], prefix + chat + suffix), intended)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        self.sending_until = time.perf_counter()
        elapsed = self.sending_until - t0
        if poller is not None:
            deadline = time.perf_counter() + cfg["settle_s"]
            while time.perf_counter() < deadline:
                if self.polls and self.polls[-1][1] >= len(self.accepted):
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await poller
        for conn in conns:
            conn.writer.close()
        return self.summary(total, elapsed)

    def summary(self, total: int, elapsed: float) -> dict[str, Any]:
        """Percentiles in milliseconds."""
        lat = sorted(x * 1000 for x in self.latencies)
        out: dict[str, Any] = {
            "sent": total,
            "achieved_rate": total / elapsed,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": self.errors,
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else 0.0,
        }
        if self.config.get("read_path"):
            out.update(self.freshness())
        return out

    def freshness(self) -> dict[str, Any]:
        """Event k (in order of acceptance) is visible at the first poll with >= k contacts."""
        accepted = sorted(self.accepted)
        ages: list[float] = []
        missing = 0
        p = 0
        for k, (_, intended) in enumerate(accepted, start=1):
            while p < len(self.polls) and self.polls[p][1] < k:
                p += 1
            if p == len(self.polls):
                missing = len(accepted) - k + 1
                break
            ages.append((self.polls[p][0] - intended) * 1000)
        ages.sort()
        lags = sorted(lag for seen, lag in self.lags if seen <= self.sending_until)
        return {
            "lag_p50_ms": percentile(lags, 50),
            "lag_p99_ms": percentile(lags, 99),
            "lag_max_ms": lags[-1] if lags else 0.0,
            "fresh_p50_ms": percentile(ages, 50),
            "fresh_p99_ms": percentile(ages, 99),
            "fresh_max_ms": ages[-1] if ages else 0.0,
            "fresh_missing": missing,
            "polls": len(self.polls),
            "poll_errors": self.poll_errors,
            "final_total": self.polls[-1][1] if self.polls else 0,
        }


def main(path: str) -> None:
    """Read the config, run, print the summary."""
    config = orjson.loads(Path(path).read_bytes())
    result = uvloop.run(Run(config).main())
    sys.stdout.write(orjson.dumps(result).decode())


if __name__ == "__main__":
    main(sys.argv[1])
