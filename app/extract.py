"""Freshchat's Extract (raw reports) API client for the backfill (§13).

`submit` asks for a window's report, `poll` reads its status and download links, and
`download` streams one signed link to a file. As in `app.freshchat`: explicit timeouts,
no redirects on API calls (the domain allow-list is the SSRF guard) and the API key only
ever in the `Authorization` header of API calls. Downloads come from other hosts (S3-like
signed links): they never carry the `Authorization` header, their URLs are checked
(https; http only in insecure mode; no metadata or link-local addresses) and only their
scheme, host and path are ever shown: the query string is the signature, a secret.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

from app.domains import api_base
from app.freshchat import parse_retry_after

API_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_DOWNLOAD_BYTES = 2 * 1024**3  # a 28-day extract is tens of MB; this only guards the disk
MAX_REDIRECTS = 3  # downloads only (a signed link may point on to the storage host)
RETRY_AFTER_MAX_S = 3600.0
EVENT = "Conversation-Resolved"
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data"})


class Kind(Enum):
    """What a call's answer means for the backfill."""

    OK = "ok"
    RETRY = "retry"  # 429, 5xx, network error or timeout: try again later
    REJECTED = "rejected"  # 401/403 on an API call: the Freshchat key is not accepted
    NOT_FOUND = "not_found"  # 404 on a poll: Freshchat does not know the report (any more)
    EXPIRED = "expired"  # 403/404/410 on a download: the signed link ran out; poll again
    REFUSED = "refused"  # any other answer: stops the backfill with `detail`


@dataclass(frozen=True)
class Link:
    """One download link of a completed report."""

    href: str
    from_date: str = ""
    to_date: str = ""
    status: str = ""

    @property
    def safe(self) -> str:
        """The URL without its query string or fragment (the signature): fit for logs."""
        return safe_url(self.href)

    @property
    def identity(self) -> str:
        """Stays the same when Freshchat signs the link again (the query changes)."""
        return f"{self.from_date}|{self.to_date}|{urlsplit(self.href).path}"


@dataclass(frozen=True)
class Outcome:
    """One call's answer."""

    kind: Kind
    status: int | None = None
    detail: str = ""
    retry_after: float | None = None
    report_id: str = ""
    report_status: str = ""
    links: list[Link] = field(default_factory=list)
    size: int = 0

    @property
    def ok(self) -> bool:
        """The call did what was asked."""
        return self.kind is Kind.OK


def safe_url(url: str) -> str:
    """scheme://host/path of a URL: never its query string (signatures) or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def _network(exc: httpx.HTTPError) -> Outcome:
    why = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
    return Outcome(Kind.RETRY, detail=why)


def _retry_after(response: httpx.Response) -> float | None:
    seconds = parse_retry_after(response.headers.get("retry-after"))
    return None if seconds is None else min(seconds, RETRY_AFTER_MAX_S)


def _message(response: httpx.Response) -> str:
    """Freshchat's own error message, short (it names what it refused)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:200] if message else ""


def _failed_call(response: httpx.Response, what: str) -> Outcome:
    status = response.status_code
    if status == 429 or status >= 500:
        return Outcome(Kind.RETRY, status, f"HTTP {status}", _retry_after(response))
    if status in (401, 403):
        return Outcome(Kind.REJECTED, status, f"HTTP {status}")
    if status == 404 and what == "poll":
        return Outcome(Kind.NOT_FOUND, status, "HTTP 404")
    message = _message(response)
    return Outcome(Kind.REFUSED, status, f"HTTP {status}" + (f": {message}" if message else ""))


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def submit(client: httpx.Client, domain: str, api_key: str, start: str, end: str) -> Outcome:
    """`POST /v2/reports/raw` for resolved conversations in [start, end] as CSV."""
    body = {"start": start, "end": end, "event": EVENT, "format": "csv"}
    try:
        response = client.post(
            api_base(domain) + "/reports/raw", json=body, headers=_headers(api_key)
        )
    except httpx.HTTPError as exc:
        return _network(exc)
    if not 200 <= response.status_code < 300:
        return _failed_call(response, "submit")
    answer = _json(response)
    report_id = answer.get("id") if answer else None
    if not isinstance(report_id, str | int) or not str(report_id).strip():
        return Outcome(Kind.RETRY, response.status_code, "the answer has no report id")
    return Outcome(Kind.OK, response.status_code, report_id=str(report_id).strip())


def poll(client: httpx.Client, domain: str, api_key: str, report_id: str) -> Outcome:
    """`GET /v2/reports/raw/{id}`: PENDING, COMPLETED (with links) or FAILED."""
    url = f"{api_base(domain)}/reports/raw/{quote(report_id, safe='')}"
    try:
        response = client.get(url, headers=_headers(api_key))
    except httpx.HTTPError as exc:
        return _network(exc)
    if response.status_code != 200:
        return _failed_call(response, "poll")
    answer = _json(response)
    status = answer.get("status") if answer else None
    if not isinstance(status, str):
        return Outcome(Kind.RETRY, 200, "the answer has no status")
    links: list[Link] = []
    items = answer.get("links") if answer else None
    for item in items if isinstance(items, list) else []:
        link = item.get("link") if isinstance(item, dict) else None
        href = link.get("href") if isinstance(link, dict) else None
        if isinstance(href, str) and href:
            links.append(
                Link(
                    href,
                    str(item.get("from_date") or ""),
                    str(item.get("to_date") or ""),
                    str(item.get("status") or "").upper(),
                )
            )
    return Outcome(Kind.OK, 200, report_status=status.upper(), report_id=report_id, links=links)


def download_allowed(url: str, allow_insecure: bool) -> str:
    """Why this download URL must not be fetched ("" when it may)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_insecure):
        return "a download link is not https"
    host = (parts.hostname or "").rstrip(".")
    if not host or parts.username is not None or parts.password is not None:
        return "a download link has no host, or carries credentials"
    if host in _METADATA_NAMES or host.endswith(".internal"):
        return "a download link points at a metadata service"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" and not allow_insecure:
            return "a download link points at this machine"
        return ""
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return "a download link points at a link-local or metadata address"
    if not allow_insecure and (address.is_private or address.is_loopback):
        return "a download link points at a private address"
    return ""


def download(client: httpx.Client, url: str, out: IO[bytes], allow_insecure: bool) -> Outcome:
    """Stream one signed link into `out` (no Authorization header, ever); `size` in bytes."""
    for _ in range(MAX_REDIRECTS + 1):
        refused = download_allowed(url, allow_insecure)
        if refused:
            return Outcome(Kind.REFUSED, detail=refused)
        request = client.build_request("GET", url, headers={"Accept": "*/*"})
        request.headers.pop("Authorization", None)  # whatever the client's defaults say
        try:
            response = client.send(request, stream=True, auth=None, follow_redirects=False)
        except httpx.HTTPError as exc:
            return _network(exc)
        try:
            status = response.status_code
            if status in (301, 302, 303, 307, 308) and response.headers.get("location"):
                url = urljoin(url, response.headers["location"])
                continue
            if status in (403, 404, 410):
                return Outcome(Kind.EXPIRED, status, f"HTTP {status}")
            if status == 429 or status >= 500:
                return Outcome(Kind.RETRY, status, f"HTTP {status}", _retry_after(response))
            if status != 200:
                return Outcome(Kind.REFUSED, status, f"a download answered HTTP {status}")
            size = 0
            out.seek(0)
            out.truncate()
            for chunk in response.iter_bytes(256 * 1024):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    return Outcome(Kind.REFUSED, status, "a download is over the size limit")
                out.write(chunk)
            out.flush()
            return Outcome(Kind.OK, status, size=size)
        except httpx.HTTPError as exc:
            return _network(exc)
        finally:
            response.close()
    return Outcome(Kind.REFUSED, detail="a download link redirects too often")
