"""Freshchat API client: key verification (§2) and group-name lookup (§5)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import httpx

from app.domains import api_base
from app.errors import FreshchatUnreachable, UpstreamError

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


async def verify_api_key(domain: str, api_key: str, timeout: httpx.Timeout = TIMEOUT) -> None:
    """One authenticated call; UpstreamError says whether Freshchat rejected or was unreachable."""
    url = api_base(domain) + "/groups"
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.get(
                url, params={"items_per_page": 1}, headers=_headers(api_key)
            )
    except httpx.HTTPError as exc:
        raise _unreachable(domain, type(exc).__name__) from None
    if response.status_code in (401, 403):
        raise UpstreamError(
            "Freshchat rejected the API key: copy the key of a user with the Account "
            "Administrator role (Freshchat > Settings > API Tokens)"
        )
    if response.status_code >= 300:
        raise _unreachable(domain, f"HTTP {response.status_code}")


def _unreachable(domain: str, why: str) -> FreshchatUnreachable:
    return FreshchatUnreachable(
        f"could not reach Freshchat at {domain} ({why}); check the domain or try again"
    )


@dataclass(frozen=True)
class GroupAnswer:
    """Outcome of one group lookup: a name, not found, or retry after some seconds."""

    name: str | None = None
    missing: bool = False
    retry_after: float | None = None
    outcome: str = "ok"


def fetch_group(client: httpx.Client, domain: str, api_key: str, group_id: str) -> GroupAnswer:
    """`GET /v2/groups/{id}`: 200 -> name, 404 -> missing, 429/5xx/network -> retry."""
    url = f"{api_base(domain)}/groups/{quote(group_id, safe='')}"
    try:
        response = client.get(url, headers=_headers(api_key))
    except httpx.HTTPError:
        return GroupAnswer(retry_after=None, outcome="network_error")
    if response.status_code == 200:
        try:
            name = response.json().get("name")
        except ValueError:
            name = None
        if isinstance(name, str) and name.strip():
            return GroupAnswer(name=name.strip()[:255])
        return GroupAnswer(outcome="bad_response")
    if response.status_code == 404:
        return GroupAnswer(missing=True, outcome="not_found")
    retry = response.headers.get("retry-after")
    seconds = float(retry) if retry and retry.strip().isdigit() else None
    if response.status_code in (401, 403):
        return GroupAnswer(retry_after=seconds, outcome="unauthorized")
    if response.status_code == 429:
        return GroupAnswer(retry_after=seconds, outcome="rate_limited")
    return GroupAnswer(retry_after=seconds, outcome="server_error")
