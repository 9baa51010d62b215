"""Freshchat API client: key verification (§2), the group list and conversation lookups (§5).

Every call has explicit timeouts, never follows redirects (the domain allow-list is the
SSRF guard, a redirect would step around it) and never puts the API key anywhere but the
`Authorization` header: not in URLs, error messages or log lines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
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
MAX_ID = 256  # the longest group id an event may carry (app.events)
#: `items_per_page` of the group list: Freshchat's documented maximum.
PAGE_SIZE = 50
#: A listing that claims or takes more pages than this is not believed (a loop or a broken
#: answer; 50,000 groups is far beyond any contact centre).
MAX_LIST_PAGES = 1000

#: Every outcome of a Freshchat call (metric label values; `GroupListing.outcome`,
#: `ConversationAnswer.outcome`); the web tier counts key checks in
#: `injixo_freshchat_verifications`, the workers count their requests (one per page) in
#: Redis for `injixo_freshchat_requests`.
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
    url = api_base(domain) + "/groups"  # the list the workers read (§5), one group a page
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


def _failure(response: httpx.Response) -> tuple[str, float | None]:
    """The outcome of an answer that is not the one asked for, and its `Retry-After`."""
    outcome = _outcome(response.status_code)
    if outcome == "ok":  # another 2xx (or a 200 that is not JSON): not this endpoint's answer
        outcome = "bad_response"
    return outcome, parse_retry_after(response.headers.get("retry-after"))


def _json(response: httpx.Response) -> object:
    try:
        body: object = response.json()
    except ValueError:
        return None
    return body


def _id(value: object) -> str | None:
    """An id as events carry it (text or an integer), else None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= MAX_ID else None


def clean_name(value: object) -> str | None:
    """A group name as the map may hold it: NUL removed, at most MAX_GROUP_NAME, not empty."""
    if not isinstance(value, str):
        return None
    # A leading NUL would read as the negative-cache marker of the group map.
    name = value.replace("\0", "")[:MAX_GROUP_NAME]
    return name or None


@dataclass(frozen=True)
class GroupListing:
    """Every group of an account from a complete listing (`names`), or why there is none."""

    names: dict[str, str] | None = None  # group id -> name; None unless every page was read
    retry_after: float | None = None
    outcome: str = "ok"
    status: int | None = None
    requests: int = 0  # HTTP requests made, one per page read or tried

    @property
    def complete(self) -> bool:
        """Every page was read: an id absent from `names` is not a group of the account."""
        return self.names is not None


@dataclass
class _Pages:
    """What the pages read so far said."""

    names: dict[str, str]
    seen: set[str]  # every listed id, named or not
    totals: set[int]  # `total_items` as each page gave it


def list_groups(
    client: httpx.Client,
    domain: str,
    api_key: str,
    on_request: Callable[[str], None] | None = None,
) -> GroupListing:
    """Every page of `GET /v2/groups?page=N&items_per_page=50`, or the first failure."""
    # Complete only when every page answered 200 with a well-formed body; a failure ends
    # the listing with its outcome (and `Retry-After`); `bad_response` also covers a
    # listing that does not add up or runs past MAX_LIST_PAGES. The next page's URL is
    # built here, never taken from `links.next_page.href`: the key must only ever go to the
    # configured domain. `on_request(outcome)` runs after every request (the resolver
    # counts calls there); the client carries the timeouts (GROUP_TIMEOUT).
    if not _TOKEN.match(api_key):
        return GroupListing(outcome="unauthorized")
    url = api_base(domain) + "/groups"
    pages = _Pages(names={}, seen=set(), totals=set())
    for page in range(1, MAX_LIST_PAGES + 1):
        params = {"page": page, "items_per_page": PAGE_SIZE}
        try:
            response = client.get(url, params=params, headers=_headers(api_key))
        except httpx.HTTPError:
            _report(on_request, "network_error")
            return GroupListing(outcome="network_error", requests=page)
        status = response.status_code
        more = _read_page(_json(response), page, pages) if status == 200 else None
        if more is None:
            outcome, retry = _failure(response)
            _report(on_request, outcome)
            return GroupListing(retry_after=retry, outcome=outcome, status=status, requests=page)
        _report(on_request, "ok")
        if not more:
            if len(pages.totals) > 1 or len(pages.seen) < max(pages.totals, default=0):
                # Groups were created or deleted while the pages were read, so an id may
                # have moved past a page boundary unseen: this listing cannot say "absent".
                return GroupListing(outcome="bad_response", status=status, requests=page)
            return GroupListing(names=pages.names, status=status, requests=page)
    return GroupListing(outcome="bad_response", status=200, requests=MAX_LIST_PAGES)


def _report(on_request: Callable[[str], None] | None, outcome: str) -> None:
    if on_request is not None:
        on_request(outcome)


def _read_page(body: object, page: int, pages: _Pages) -> bool | None:
    """Add one page's groups to `pages`; whether more pages follow, None if malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("groups"), list):
        return None
    for item in body["groups"]:
        gid = _id(item.get("id")) if isinstance(item, dict) else None
        if gid is None:
            return None  # an entry we cannot read might be the group an event names
        pages.seen.add(gid)
        name = clean_name(item.get("name"))
        if name is not None:  # a group without a usable name counts as Undefined_Queue
            pages.names[gid] = name
    pagination = body.get("pagination")
    pagination = pagination if isinstance(pagination, dict) else {}
    total_pages = _count(pagination.get("total_pages"))
    current = _count(pagination.get("current_page"))
    if current is not None and current != page:
        return None  # the page parameter was not honoured: following it would loop
    if total_pages is not None and total_pages > MAX_LIST_PAGES:
        return None
    total_items = _count(pagination.get("total_items"))
    if total_items is not None:
        pages.totals.add(total_items)
    links = body.get("links")
    next_page = links.get("next_page") if isinstance(links, dict) else None
    return bool(next_page) or (total_pages is not None and page < total_pages)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ConversationAnswer:
    """A conversation's group if `answered` (None: no group, or no such conversation)."""

    group_id: str | None = None
    answered: bool = False
    retry_after: float | None = None
    outcome: str = "ok"
    status: int | None = None


def fetch_conversation(
    client: httpx.Client, domain: str, api_key: str, conversation_id: str
) -> ConversationAnswer:
    """`GET /v2/conversations/{id}`: its `assigned_group_id`, 404 no group, else retry."""
    if not _TOKEN.match(api_key):
        return ConversationAnswer(outcome="unauthorized")
    url = f"{api_base(domain)}/conversations/{quote(conversation_id, safe='')}"
    try:
        response = client.get(url, headers=_headers(api_key))
    except httpx.HTTPError:
        return ConversationAnswer(outcome="network_error")
    status = response.status_code
    if status == 404:
        return ConversationAnswer(answered=True, outcome="not_found", status=status)
    body = _json(response) if status == 200 else None
    if isinstance(body, dict):
        assigned = body.get("assigned_group_id")
        if assigned is None or assigned == "":
            return ConversationAnswer(answered=True, status=status)
        gid = _id(assigned)
        if gid is not None:
            return ConversationAnswer(group_id=gid, answered=True, status=status)
    outcome, retry = _failure(response)
    return ConversationAnswer(retry_after=retry, outcome=outcome, status=status)
