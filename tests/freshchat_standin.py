"""A stand-in Freshchat: a real HTTP server on loopback, scriptable per test.

Serves what Freshchat's API v2 documents, with Bearer auth: the paginated group list
`GET /v2/groups?page=N&items_per_page=M` (M at most 50, else 400; `pagination` with
`total_pages`, `links.next_page` on every page but the last) and
`GET /v2/conversations/{id}` (404 when unknown). The per-id route `GET /v2/groups/{id}`
is not served (404), but recorded like every request, so that tests can assert that
nothing asks for it. A test sets the valid keys, the group table and the conversations,
forces statuses (401, 403, 404, 429 with Retry-After, 5xx) for the next requests, for all
of them or for one page of the list, slows answers down, and reads back every request.
"Connection refused" is a closed port: `refused_domain()`.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
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
    groups: dict[str, str] = field(default_factory=dict)  # listed in this order
    conversations: dict[str, str | int | None] = field(default_factory=dict)  # id -> group
    delay_s: float = 0.0
    always: Forced | None = None
    next: deque[Forced] = field(default_factory=deque)
    pages: dict[int, deque[Forced]] = field(default_factory=dict)  # list page -> statuses
    #: Called with the page number before a list page is answered (e.g. to add a group).
    before_page: Callable[[int], None] | None = None


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

    def fail_page(
        self, page: int, status: int, times: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next `times` requests for page `page` of the group list with `status`."""
        with self._lock:
            forced = self.script.pages.setdefault(page, deque())
            forced.extend([Forced(status, retry_after)] * times)

    def recover(self) -> None:
        """Back to normal answers: no forced statuses, no delay."""
        with self._lock:
            self.script.always = None
            self.script.next.clear()
            self.script.pages.clear()
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
        """Requests for the per-id route `GET /v2/groups/{id}`, which nothing should make."""
        prefix = "/v2/groups/"
        return [
            q
            for q in self.requests
            if q.path.startswith(prefix)
            and (group_id is None or unquote(q.path[len(prefix) :]) == group_id)
        ]

    def list_gets(self) -> list[Received]:
        """The requests for the group list, `GET /v2/groups` (one per page)."""
        return [q for q in self.requests if q.method == "GET" and q.path == "/v2/groups"]

    def listed_pages(self) -> list[int]:
        """The page numbers the group list requests asked for, in order."""
        return [int(q.query.get("page", ["1"])[0]) for q in self.list_gets()]

    def conversation_gets(self, conversation_id: str | None = None) -> list[Received]:
        """The `GET /v2/conversations/{id}` requests (for one id, if given)."""
        prefix = "/v2/conversations/"
        return [
            q
            for q in self.requests
            if q.method == "GET"
            and q.path.startswith(prefix)
            and (conversation_id is None or unquote(q.path[len(prefix) :]) == conversation_id)
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
        query = parse_qs(parts.query)
        page = _number(query.get("page", ["1"])[0])
        listing = method == "GET" and parts.path == "/v2/groups"
        if listing and page is not None and self.script.before_page is not None:
            self.script.before_page(page)
        with self._lock:
            self._requests.append(Received(method, parts.path, query, authorization))
            delay = self.script.delay_s
            by_page = self.script.pages.get(page or 0) if listing else None
            if by_page:
                forced: Forced | None = by_page.popleft()
            else:
                forced = self.script.next.popleft() if self.script.next else self.script.always
            valid_keys = set(self.script.valid_keys)
            groups = list(self.script.groups.items())
            conversations = dict(self.script.conversations)
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
        if listing:
            return _list_page(groups, page, _number(query.get("items_per_page", ["10"])[0]))
        if parts.path.startswith("/v2/conversations/"):
            cid = unquote(parts.path[len("/v2/conversations/") :])
            if cid not in conversations:
                return 404, {}, _json({"code": 404, "status": "NOT_FOUND", "message": "none"})
            body = {"conversation_id": cid, "assigned_group_id": conversations[cid]}
            return 200, {}, _json({**body, "status": "resolved", "channel_id": "ch1"})
        # Everything else, the per-id group route included, is not an endpoint here.
        return 404, {}, _json({"message": "no such endpoint"})

    def stop(self) -> None:
        """Stop serving and close the socket (slow answers are cut short)."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def _number(value: str) -> int | None:
    """A positive integer query parameter, else None."""
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None


def _list_page(
    groups: list[tuple[str, str]], page: int | None, per_page: int | None
) -> tuple[int, dict[str, str], bytes]:
    """One page of the group list, shaped like Freshchat's."""
    if page is None or per_page is None or per_page > 50:
        return 400, {}, _json({"code": 400, "status": "BAD_REQUEST", "message": "bad paging"})
    total_pages = math.ceil(len(groups) / per_page)
    items = groups[(page - 1) * per_page : page * per_page]
    links: dict[str, object] = {}
    if page < total_pages:
        href = f"/v2/groups?page={page + 1}&items_per_page={per_page}"
        links["next_page"] = {"href": href, "rel": "groups", "type": "GET"}
    if page > 1:
        href = f"/v2/groups?page={page - 1}&items_per_page={per_page}"
        links["previous_page"] = {"href": href, "rel": "groups", "type": "GET"}
    body = {
        "groups": [
            {"id": gid, "name": name, "description": "", "routing_type": "INTELLIASSIGN"}
            for gid, name in items
        ],
        "pagination": {
            "total_items": len(groups),
            "total_pages": total_pages,
            "current_page": page,
            "items_per_page": per_page,
        },
        "links": links,
    }
    return 200, {}, _json(body)


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
