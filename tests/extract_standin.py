"""A stand-in for Freshchat's Extract (raw reports) API: real HTTP servers on loopback.

Two servers, as in production: the API (`POST /v2/reports/raw`, `GET /v2/reports/raw/{id}`,
and `GET /v2/groups[/{id}]` for §5 names, all with Bearer auth) and a separate download
host serving the signed links (no auth; a link's `sig` must be one the API handed out).
A test scripts the answers: how many polls stay PENDING, which windows' reports FAIL,
which downloads answer 403 once (an expired link: fresh links come with the next poll),
forced statuses (429 with Retry-After, 5xx) per route, slow downloads. Downloads are the
rows a test gives (as CSV or ZIP, headers spelled in turn two ways) or any files it
chooses. Every request is recorded with its headers and body.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit


class ExtractRow(NamedTuple):
    """One solved chat as a download lists it."""

    conversation_id: str
    resolved_ms: int
    group_id: str = ""
    group_name: str = ""


@dataclass(frozen=True)
class Part:
    """One download of a report: its file name and bytes."""

    name: str
    body: bytes


@dataclass(frozen=True)
class Received:
    """One request: which server, what, with which headers (names lower-case) and body."""

    server: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass(frozen=True)
class Forced:
    """An answer to give instead of the normal one."""

    status: int
    retry_after: str | None = None


SNAKE = ("conversation_id", "interaction_id", "resolved_at", "group_id", "group_name", "channel")
TITLE = ("Conversation ID", "Interaction ID", "Resolved At", "Group ID", "Group Name", "Channel")


def iso_z(ms: int) -> str:
    """`2026-11-03T17:54:59.000Z`."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def plain_utc(ms: int) -> str:
    """`2026-11-08 05:26:48` (no offset: UTC)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def csv_bytes(rows: list[ExtractRow], title_case: bool = False) -> bytes:
    """Rows as a download's CSV: snake_case headers and ISO times with Z, or Title Case
    headers and times without an offset."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(TITLE if title_case else SNAKE)
    for n, r in enumerate(rows):
        when = plain_utc(r.resolved_ms) if title_case else iso_z(r.resolved_ms)
        writer.writerow(
            [r.conversation_id, 480113500000000 + n, when, r.group_id, r.group_name, "Web"]
        )
    return out.getvalue().encode()


def zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A ZIP holding these files."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in members:
            archive.writestr(name, body)
    return out.getvalue()


def day_of(text: str) -> str:
    """The UTC day of a report's `start`/`end`."""
    return text[:10]


@dataclass
class Report:
    """One submitted report."""

    id: str
    start: str
    end: str
    parts: list[Part]
    fails: bool
    polls: int = 0
    signatures: dict[int, set[str]] = field(default_factory=dict)


Layout = Callable[[str, str, list[ExtractRow]], list[Part]]


def alternating(start: str, end: str, rows: list[ExtractRow]) -> list[Part]:
    """Even-numbered days' windows as a ZIP of two CSVs, the others as one plain CSV."""
    if int(start[8:10]) % 2 == 0:
        half = len(rows) // 2
        return [
            Part(
                f"extract-{day_of(start)}.zip",
                zip_bytes(
                    [
                        ("resolved_1.csv", csv_bytes(rows[:half])),
                        ("resolved_2.csv", csv_bytes(rows[half:])),
                    ]
                ),
            )
        ]
    return [Part(f"extract-{day_of(start)}.csv", csv_bytes(rows, title_case=True))]


def halves(start: str, end: str, rows: list[ExtractRow]) -> list[Part]:
    """Each window as two downloads: a ZIP of the first half, a CSV of the other half."""
    half, day = len(rows) // 2, day_of(start)
    return [
        Part(f"extract-{day}.zip", zip_bytes([("resolved.csv", csv_bytes(rows[:half]))])),
        Part(f"extract-{day}.csv", csv_bytes(rows[half:], title_case=True)),
    ]


@dataclass
class Script:
    """What the stand-in answers; change it from the test at any time."""

    api_key: str = "fc-extract-key"
    rows: list[ExtractRow] = field(default_factory=list)
    layout: Layout = alternating
    pending_polls: int = 1  # PENDING answers before a report completes
    fail_reports: dict[str, int] = field(default_factory=dict)  # window start day -> FAILs
    expire_once: set[str] = field(default_factory=set)  # part names: the first link gets 403
    forced: dict[str, deque[Forced]] = field(default_factory=dict)  # route -> next answers
    groups: dict[str, str] = field(default_factory=dict)
    chunk_delay_s: float = 0.0  # pause between 16 KB pieces of a download
    after_download: Callable[[], None] | None = None  # called after each download served


class ExtractStandIn:
    """The two servers, the script and the log of requests (all thread-safe)."""

    def __init__(self) -> None:
        self.script = Script()
        self.reports: dict[str, Report] = {}
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._servers = [self._serve("api"), self._serve("files")]

    def _serve(self, name: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self, name))
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return server

    @property
    def domain(self) -> str:
        """The API's domain for an integration (needs FRESHCHAT_ALLOW_INSECURE)."""
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def files_url(self) -> str:
        """The download host: another origin than the API."""
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def force(
        self, route: str, status: int, times: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next `times` requests of a route (submit, poll, download) with `status`."""
        with self._lock:
            self.script.forced.setdefault(route, deque()).extend(
                [Forced(status, retry_after)] * times
            )

    @property
    def requests(self) -> list[Received]:
        """A copy of every request so far."""
        with self._lock:
            return list(self._requests)

    def of(self, route: str) -> list[Received]:
        """The requests of one route: submit, poll, download or groups."""
        return [q for q in self.requests if _route(q.server, q.method, q.path) == route]

    def stop(self) -> None:
        """Stop both servers."""
        for server in self._servers:
            server.shutdown()
            server.server_close()

    # --- answers ---------------------------------------------------------------------------

    def answer(
        self, server: str, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        """Status, headers and body for one request."""
        parts = urlsplit(target)
        route = _route(server, method, parts.path)
        with self._lock:
            self._requests.append(
                Received(
                    server,
                    method,
                    parts.path,
                    parse_qs(parts.query),
                    headers,
                    body,
                    time.monotonic(),
                )
            )
            queue = self.script.forced.get(route)
            forced = queue.popleft() if queue else None
        if forced is not None:
            extra = {"Retry-After": forced.retry_after} if forced.retry_after else {}
            return forced.status, extra, _json({"message": f"forced {forced.status}"})
        if server == "files":
            return self._download(parts.path, parse_qs(parts.query))
        if headers.get("authorization") != f"Bearer {self.script.api_key}":
            return 401, {}, _json({"code": 401, "status": "UNAUTHORIZED", "message": "invalid"})
        if route == "submit":
            return self._submit(body)
        if route == "poll":
            return self._poll(unquote(parts.path.rsplit("/", 1)[1]))
        if route == "groups":
            return self._groups(parts.path)
        return 404, {}, _json({"message": "no such endpoint"})

    def _submit(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            asked: dict[str, Any] = json.loads(body)
            start, end = str(asked["start"]), str(asked["end"])
        except (ValueError, KeyError, TypeError):
            return 400, {}, _json({"message": "start and end are required"})
        if asked.get("event") != "Conversation-Resolved" or asked.get("format") != "csv":
            return 400, {}, _json({"message": "unsupported event or format"})
        first, last = int(_ms(start)), int(_ms(end))
        rows = [r for r in self.script.rows if first <= r.resolved_ms <= last]
        with self._lock:
            left = self.script.fail_reports.get(day_of(start), 0)
            if left:
                self.script.fail_reports[day_of(start)] = left - 1
            report = Report(
                str(uuid.uuid4()), start, end, self.script.layout(start, end, rows), left > 0
            )
            self.reports[report.id] = report
        link = {"rel": "extracts", "href": f"/reports/raw/{report.id}"}
        return 200, {}, _json({"id": report.id, "link": link})

    def _poll(self, report_id: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            report = self.reports.get(report_id)
            if report is None:
                return 404, {}, _json({"message": "no such report"})
            report.polls += 1
            answer: dict[str, Any] = {"id": report.id, "interval": f"{report.start} - {report.end}"}
            if report.polls <= self.script.pending_polls:
                return 200, {}, _json({**answer, "status": "PENDING"})
            if report.fails:
                return 200, {}, _json({**answer, "status": "FAILED"})
            links = []
            for n, part in enumerate(report.parts):
                sig = secrets.token_hex(8)
                report.signatures.setdefault(n, set()).add(sig)
                href = f"{self.files_url}/extract/{report.id}/{n}/{part.name}?sig={sig}&expires=1"
                links.append(
                    {
                        "link": {"rel": "extract", "href": href},
                        "from_date": report.start,
                        "to_date": report.end,
                        "status": "COMPLETED",
                    }
                )
        return 200, {}, _json({**answer, "status": "COMPLETED", "links": links})

    def _download(
        self, path: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        try:
            _, _, report_id, index, name = path.split("/", 4)
            with self._lock:
                report = self.reports[report_id]
                part = report.parts[int(index)]
                valid = query.get("sig", [""])[0] in report.signatures.get(int(index), set())
                if valid and name in self.script.expire_once:
                    self.script.expire_once.discard(name)
                    valid = False
        except (ValueError, KeyError, IndexError):
            return 404, {}, b"<Error><Code>NoSuchKey</Code></Error>"
        if not valid:
            return (
                403,
                {},
                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            )
        if self.script.after_download is not None:
            self.script.after_download()
        delay = self.script.chunk_delay_s
        if not delay:
            return 200, {}, part.body

        def pieces() -> Iterator[bytes]:
            for at in range(0, len(part.body), 16384):
                yield part.body[at : at + 16384]
                time.sleep(delay)

        return 200, {"Content-Length": str(len(part.body))}, pieces()

    def _groups(self, path: str) -> tuple[int, dict[str, str], bytes]:
        groups = dict(self.script.groups)
        if path == "/v2/groups":
            items = [{"id": gid, "name": name} for gid, name in groups.items()]
            return 200, {}, _json({"groups": items, "pagination": {"total_pages": 1}, "links": {}})
        gid = unquote(path[len("/v2/groups/") :])
        if gid in groups:
            return 200, {}, _json({"id": gid, "name": groups[gid]})
        return 404, {}, _json({"message": "no group"})


def _ms(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() * 1000


def _route(server: str, method: str, path: str) -> str:
    if server == "files":
        return "download"
    if path == "/v2/reports/raw" and method == "POST":
        return "submit"
    if path.startswith("/v2/reports/raw/") and method == "GET":
        return "poll"
    if path.startswith("/v2/groups") and method == "GET":
        return "groups"
    return "other"


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def _handler_for(standin: ExtractStandIn, server: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, content = standin.answer(server, method, self.path, headers, body)
            try:
                self.send_response(status)
                kind = "application/octet-stream" if server == "files" else "application/json"
                self.send_header("Content-Type", kind)
                if isinstance(content, bytes):
                    self.send_header("Content-Length", str(len(content)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                if isinstance(content, bytes):
                    self.wfile.write(content)
                else:
                    for piece in content:
                        self.wfile.write(piece)
                        self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a killed worker)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    return Handler


@contextmanager
def running() -> Iterator[ExtractStandIn]:
    """A stand-in for the duration of a `with` block."""
    standin = ExtractStandIn()
    try:
        yield standin
    finally:
        standin.stop()
