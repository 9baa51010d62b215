"""A stand-in Freshchat: a real HTTP server on loopback, scriptable per test.

Serves `GET /v2/groups` (list, as used for key verification) and `GET /v2/groups/{id}`
with Bearer auth, like Freshchat's API v2. A test sets the valid keys and the group table,
forces statuses (401, 403, 404, 429 with Retry-After, 5xx) for the next requests or for
all of them, slows answers down, and reads back every request received.
"Connection refused" is a closed port: `refused_domain()`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests.redis_server import free_port


@dataclass(frozen=True)
class Received:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


@dataclass(frozen=True)
class Forced:
    """A status to answer instead of the normal one."""

    status: int
    retry_after: str | None = None


@dataclass
class Script:
    """What the stand-in answers; change it from the test at any time."""

    valid_keys: set[str] = field(default_factory=lambda: {"fc-good-key"})
    groups: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    always: Forced | None = None
    next: deque[Forced] = field(default_factory=deque)


class FreshchatStandIn:
    """The server, its script and the log of requests (all thread-safe)."""

    def __init__(self, port: int = 0) -> None:
        self.script = Script()
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def domain(self) -> str:
        """The domain to configure an integration with (needs FRESHCHAT_ALLOW_INSECURE)."""
        return f"http://127.0.0.1:{self.port}"

    # Scripting.
    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` requests with `status` (and `Retry-After` if given)."""
        with self._lock:
            self.script.next.extend([Forced(status, retry_after)] * times)

    def fail_always(self, status: int, retry_after: str | None = None) -> None:
        """Answer every request with `status` until `recover()`."""
        with self._lock:
            self.script.always = Forced(status, retry_after)

    def recover(self) -> None:
        """Back to normal answers: no forced statuses, no delay."""
        with self._lock:
            self.script.always = None
            self.script.next.clear()
            self.script.delay_s = 0.0

    def slow(self, seconds: float) -> None:
        """Wait this long before answering."""
        with self._lock:
            self.script.delay_s = seconds

    # What was received.
    @property
    def requests(self) -> list[Received]:
        """A copy of every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def group_gets(self, group_id: str | None = None) -> list[Received]:
        """The `GET /v2/groups/{id}` requests (for one id, if given)."""
        prefix = "/v2/groups/"
        return [
            q
            for q in self.requests
            if q.method == "GET"
            and q.path.startswith(prefix)
            and (group_id is None or unquote(q.path[len(prefix) :]) == group_id)
        ]

    def clear_requests(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self._requests.clear()

    # Serving.
    def _answer(
        self, method: str, target: str, authorization: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        with self._lock:
            self._requests.append(
                Received(method, parts.path, parse_qs(parts.query), authorization)
            )
            delay = self.script.delay_s
            forced = self.script.next.popleft() if self.script.next else self.script.always
            valid_keys = set(self.script.valid_keys)
            groups = dict(self.script.groups)
        if delay and self._stopping.wait(delay):
            return 503, {}, b""
        if forced is not None:
            headers = {"Retry-After": forced.retry_after} if forced.retry_after else {}
            return forced.status, headers, _json({"message": f"forced {forced.status}"})
        if method != "GET":
            return 405, {}, _json({"message": "method not allowed"})
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token not in valid_keys:
            return 401, {}, _json({"code": 401, "status": "UNAUTHORIZED", "message": "invalid"})
        if parts.path == "/v2/groups":
            items = [{"id": gid, "name": name} for gid, name in groups.items()]
            per_page = int(parse_qs(parts.query).get("items_per_page", ["10"])[0])
            body = {"groups": items[:per_page], "pagination": {"total_items": len(items)}}
            return 200, {}, _json(body)
        if parts.path.startswith("/v2/groups/"):
            gid = unquote(parts.path[len("/v2/groups/") :])
            if gid in groups:
                return 200, {}, _json({"id": gid, "name": groups[gid], "routing_type": "X"})
            return 404, {}, _json({"code": 404, "status": "NOT_FOUND", "message": "no group"})
        return 404, {}, _json({"message": "no such endpoint"})

    def stop(self) -> None:
        """Stop serving and close the socket (slow answers are cut short)."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def _handler_for(standin: FreshchatStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            status, headers, body = standin._answer(
                method, self.path, self.headers.get("Authorization")
            )
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    return Handler


@contextmanager
def running(port: int = 0) -> Iterator[FreshchatStandIn]:
    """A stand-in for the duration of a `with` block (on `port`, else a free one)."""
    standin = FreshchatStandIn(port)
    try:
        yield standin
    finally:
        standin.stop()


def refused_domain() -> str:
    """A loopback domain where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"
