"""The Extract API client (§13) on scripted answers: what each answer means, downloads that
never carry the Authorization header, checked download URLs, no redirects on API calls."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest

from app.extract import Kind, download, download_allowed, poll, safe_url, submit

KEY = "fc-secret-key"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kwargs: object) -> httpx.Client:
    """A client whose every request goes to `handler`."""
    return httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (429, {"Retry-After": "12"}, Kind.RETRY, 12.0),
        (503, {}, Kind.RETRY, None),
        (401, {}, Kind.REJECTED, None),
        (403, {}, Kind.REJECTED, None),
        (400, {}, Kind.REFUSED, None),
        (302, {"Location": "https://elsewhere.example/v2/reports/raw"}, Kind.REFUSED, None),
    ],
)
def test_submit_answers(
    status: int, headers: dict[str, str], kind: Kind, retry_after: float | None
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, json={"message": "start is invalid"})

    with client(handler) as c:
        out = submit(c, "acme.freshchat.com", KEY, "2026-11-02T00:00:00.000Z", "x")
    assert (out.kind, out.retry_after) == (kind, retry_after)
    assert len(seen) == 1  # a redirect is not followed
    assert seen[0].url == "https://acme.freshchat.com/v2/reports/raw"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    if status == 400:
        assert out.detail == "HTTP 400: start is invalid"


def test_submit_and_poll_read_the_answers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"id": "r-1", "link": {"href": "/reports/raw/r-1"}})
        assert request.url.raw_path == b"/v2/reports/raw/r%2F1"  # the id stays one segment
        link = {"href": "https://s3.example/a.zip?sig=S&expires=1"}
        return httpx.Response(
            200,
            json={
                "id": "r/1",
                "status": "completed",
                "links": [
                    {"link": link, "from_date": "F", "to_date": "T", "status": "COMPLETED"},
                    7,
                ],
            },
        )

    with client(handler) as c:
        assert submit(c, "acme.freshchat.com", KEY, "s", "e").report_id == "r-1"
        out = poll(c, "acme.freshchat.com", KEY, "r/1")
    assert out.ok and out.report_status == "COMPLETED"
    (link,) = out.links
    assert link.safe == "https://s3.example/a.zip" and link.identity == "F|T|/a.zip"


def test_poll_answers_without_status_or_unknown() -> None:
    answers = iter([httpx.Response(200, json={"id": "r"}), httpx.Response(404, json={})])
    with client(lambda request: next(answers)) as c:
        assert poll(c, "acme.freshchat.com", KEY, "r").kind is Kind.RETRY
        assert poll(c, "acme.freshchat.com", KEY, "r").kind is Kind.NOT_FOUND


def test_network_errors_are_retried() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    with client(handler) as c:
        out = submit(c, "acme.freshchat.com", KEY, "s", "e")
    assert out.kind is Kind.RETRY and out.detail == "timed out"


def test_a_download_never_carries_authorization_even_from_client_defaults() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "fc-reports.example":
            return httpx.Response(307, headers={"Location": "https://bucket.s3.example/p.csv?X=1"})
        return httpx.Response(200, content=b"conversation_id,resolved_at\n")

    out = io.BytesIO(b"left over")
    defaults = {"Authorization": f"Bearer {KEY}"}
    with client(handler, headers=defaults, auth=("user", KEY)) as c:
        got = download(c, "https://fc-reports.example/extract/p.csv?sig=abc", out, False)
    assert got.ok and got.size == len(b"conversation_id,resolved_at\n")
    assert out.getvalue() == b"conversation_id,resolved_at\n"
    assert [r.url.host for r in seen] == ["fc-reports.example", "bucket.s3.example"]
    assert all("authorization" not in r.headers for r in seen)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(403, Kind.EXPIRED), (404, Kind.EXPIRED), (500, Kind.RETRY), (400, Kind.REFUSED)],
)
def test_download_answers(status: int, kind: Kind) -> None:
    with client(lambda request: httpx.Response(status)) as c:
        assert download(c, "https://s3.example/p.csv?sig=x", io.BytesIO(), False).kind is kind


@pytest.mark.parametrize(
    ("url", "insecure", "allowed"),
    [
        ("https://bucket.s3.amazonaws.com/p.csv?sig=x", False, True),
        ("http://bucket.s3.amazonaws.com/p.csv", False, False),
        ("http://127.0.0.1:9000/p.csv", True, True),
        ("https://127.0.0.1/p.csv", False, False),
        ("https://10.0.0.7/p.csv", False, False),
        ("https://localhost/p.csv", False, False),
        ("http://169.254.169.254/latest/meta-data", True, False),
        ("https://metadata.google.internal/x", True, False),
        ("https://user:pw@s3.example/p.csv", False, False),
        ("ftp://s3.example/p.csv", True, False),
        ("https:///p.csv", False, False),
    ],
)
def test_download_urls_are_checked(url: str, insecure: bool, allowed: bool) -> None:
    assert (download_allowed(url, insecure) == "") is allowed


def test_a_redirect_to_a_refused_url_is_not_followed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest"})

    with client(handler) as c:
        got = download(c, "https://s3.example/p.csv?sig=x", io.BytesIO(), True)
    assert got.kind is Kind.REFUSED and len(seen) == 1


def test_safe_url_drops_the_signature_and_credentials() -> None:
    assert (
        safe_url("https://u:p@s3.example:8443/a/b.zip?sig=S#f") == "https://s3.example:8443/a/b.zip"
    )
