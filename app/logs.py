"""Structured logs: one JSON object per line; one line per request. Never a secret:
only fields the code puts in explicitly are written (no headers, bodies or query values)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extra}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr for the `injixo` loggers (and RQ's)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("injixo", "rq.worker"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


request_log = logging.getLogger("injixo.request")
FLUSH_EVERY_S = 0.05


class RequestLines:
    """The per-request line, written as the `injixo.request` logger would, but buffered and
    flushed every 50 ms: through `logging` each line cost about 10 µs of the hot path."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.flushing: asyncio.TimerHandle | None = None
        self.second = -1
        self.prefix = b""

    def add(self, fields: dict[str, Any]) -> None:
        """Queue one line (dropped when the logger is not enabled for INFO)."""
        if not request_log.isEnabledFor(logging.INFO):
            return
        self._queue(fields)

    def request(
        self, scope: Scope, status: int, started: float, fields: dict[str, Any] | None = None
    ) -> None:
        """Queue the line for one HTTP request (`started` from `time.perf_counter()`)."""
        if not request_log.isEnabledFor(logging.INFO):
            return
        line = {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        }
        if fields:
            line.update(fields)
        self._queue(line)

    def _queue(self, fields: dict[str, Any]) -> None:
        # The fixed head (timestamp to the second, level, logger, msg) is rendered once a
        # second; the rest of the line is the fields' JSON object without its brace.
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            ts = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self.prefix = ('{"ts":"' + ts).encode()
        millis = b".%03d+00:00" % min(999, int((now - second) * 1000))
        body = orjson.dumps(fields, default=str)
        rest = b"," + body[1:] if len(body) > 2 else b"}"
        self.lines.append(self.prefix + millis + _HEAD + rest)
        if self.flushing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self.flushing = loop.call_later(FLUSH_EVERY_S, self.flush)

    def flush(self) -> None:
        """Write what is queued."""
        self.flushing = None
        if self.lines:
            lines, self.lines = self.lines, []
            sys.stderr.write(b"\n".join(lines).decode() + "\n")
            sys.stderr.flush()


_HEAD = b'","level":"info","logger":"' + request_log.name.encode() + b'","msg":"request"'
REQUEST_LINES = RequestLines()
LOGGED = "injixo.logged"  # scope flag: the app wrote this request's line itself


class RequestLog:
    """ASGI middleware: one line per HTTP request with method, route path, status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Log after the response has been sent."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not scope.get(LOGGED):
                REQUEST_LINES.request(scope, status, started)
