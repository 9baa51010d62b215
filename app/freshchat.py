"""Freshchat API client: key verification (§2) and group-name lookup (§5).

Every call has explicit timeouts, never follows redirects (the domain allow-list is the
SSRF guard, a redirect would step around it) and never puts the API key anywhere but the
`Authorization` header: not in URLs, error messages or log lines.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import httpx

from app.domains import api_base
from app.errors import BadRequest, FreshchatUnreachable, UpstreamError
from app.metrics import VERIFICATIONS

#: Key verification on save: a person is waiting, but Freshchat may be slow to answer.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Group lookups from workers: shorter, a drain must not stall on one slow answer.
GROUP_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
MAX_GROUP_NAME = 255

#: Every outcome of a Freshchat call (metric label values; `GroupAnswer.outcome`); the
#: web tier counts key checks in `injixo_freshchat_verifications`, the workers count group
#: lookups in Redis for `injixo_freshchat_requests`.
OUTCOMES = (
    "ok",
    "not_found",
    "unauthorized",
    "rate_limited",
    "server_error",
    "network_error",
    "bad_response",
)

# Printable ASCII without spaces: what a bearer token can be (RFC 6750 b64token and more).
_TOKEN = re.compile(r"^[\x21-\x7e]+$")

REJECTED = (
    "Freshchat rejected the API key: copy the key of a user with the Account "
    "Administrator role (Freshchat > Settings > API Tokens)"
)


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def _outcome(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    if status in (401, 403):
        return "unauthorized"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "bad_response"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay in seconds or an HTTP-date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        return max(0.0, when.timestamp() - current)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


async def verify_api_key(domain: str, api_key: str, timeout: httpx.Timeout = TIMEOUT) -> None:
    """One authenticated call; UpstreamError says whether Freshchat rejected or was unreachable.

    401/403 -> UpstreamError (400, "Freshchat rejected the API key"); network error, timeout,
    429 or 5xx -> FreshchatUnreachable (502, "could not reach Freshchat").
    """
    if not _TOKEN.match(api_key):
        raise BadRequest(
            "the Freshchat API key contains spaces or characters an API key cannot have"
        )
    url = api_base(domain) + "/groups"
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.get(
                url, params={"items_per_page": 1}, headers=_headers(api_key)
            )
    except httpx.HTTPError as exc:
        VERIFICATIONS.labels("network_error").inc()
        raise _unreachable(domain, _network_why(exc)) from None
    outcome = _outcome(response.status_code)
    VERIFICATIONS.labels(outcome).inc()
    if outcome == "unauthorized":
        raise UpstreamError(REJECTED)
    if outcome != "ok":
        raise _unreachable(domain, f"HTTP {response.status_code}")


def _network_why(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    return type(exc).__name__


def _unreachable(domain: str, why: str) -> FreshchatUnreachable:
    return FreshchatUnreachable(
        f"could not reach Freshchat at {domain} ({why}); check the domain or try again"
    )


@dataclass(frozen=True)
class GroupAnswer:
    """Outcome of one group lookup: a name, not found, or retry (after some seconds)."""

    name: str | None = None
    missing: bool = False
    retry_after: float | None = None
    outcome: str = "ok"
    status: int | None = None


def fetch_group(client: httpx.Client, domain: str, api_key: str, group_id: str) -> GroupAnswer:
    """`GET /v2/groups/{id}`: 200 -> name, 404 -> missing, 401/403/429/5xx/network -> retry.

    The client carries the timeouts (GROUP_TIMEOUT unless the caller chose others).
    """
    if not _TOKEN.match(api_key):
        return GroupAnswer(outcome="unauthorized")
    url = f"{api_base(domain)}/groups/{quote(group_id, safe='')}"
    try:
        response = client.get(url, headers=_headers(api_key))
    except httpx.HTTPError:
        return GroupAnswer(outcome="network_error")
    return _group_answer(response)


def _group_answer(response: httpx.Response) -> GroupAnswer:
    status = response.status_code
    outcome = _outcome(status)
    if status == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        if isinstance(name, str):
            # A leading NUL would read as the negative-cache marker of the group map.
            name = name.replace("\0", "")[:MAX_GROUP_NAME]
            if name:
                return GroupAnswer(name=name, status=status)
        return GroupAnswer(outcome="bad_response", status=status)
    if outcome == "ok":  # another 2xx: not the answer this endpoint gives
        outcome = "bad_response"
    if outcome == "not_found":
        return GroupAnswer(missing=True, outcome=outcome, status=status)
    retry = parse_retry_after(response.headers.get("retry-after"))
    return GroupAnswer(retry_after=retry, outcome=outcome, status=status)
