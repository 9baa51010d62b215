"""One integration's page: details, status, contacts for a day, and its injixo API keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import orjson
from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.admin.chart import build_chart
from app.admin.page import Page, posted_form, sentence, signed_in_page, signin_redirect
from app.admin.status import status_rows
from app.counts import read_counts
from app.errors import BadRequest, Conflict, NotFound
from app.intervals import INTERVALS, Query, local_day, parse_query, zone_of

DEFAULT_INTERVAL = 15
NO_INTEGRATION = "There is no such integration."
NEW_KEY_COOKIE = "ijx_new_key"
NEW_KEY_SECONDS = 120  # the redirect after *Generate* must arrive within this


@dataclass
class CountsView:
    """The counts section: the chosen day, the rows and the chart."""

    day: str
    interval: int
    tz: str
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    chart: dict[str, Any] | None = None


def counts_query(day_text: str, interval_text: str, tz: str) -> tuple[CountsView, Query | None]:
    """The counts form's day (midnight to midnight in `tz`) as a counts query, or the error."""
    view = CountsView(day=day_text, interval=DEFAULT_INTERVAL, tz=tz)
    try:
        view.interval = int(interval_text) if interval_text else DEFAULT_INTERVAL
    except ValueError:
        view.interval = DEFAULT_INTERVAL
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        view.error = "Choose a day (YYYY-MM-DD)"
        return view, None
    try:
        start, end = local_day(day, zone_of(tz or None))
        query = parse_query(
            start.isoformat(), end.isoformat(), str(view.interval), tz or None, None
        )
    except BadRequest as exc:
        view.error = sentence(exc.message)
        return view, None
    return view, query


async def _detail(
    page: Page, iid: str, new_key: dict[str, str] | None = None, status: int = 200
) -> Response:
    try:
        record = await page.integrations.get(iid)
        keys = await page.integrations.list_keys(iid)
    except NotFound:
        return page.not_found(NO_INTEGRATION)
    params = page.request.query_params
    today = datetime.now(UTC).date().isoformat()
    # Cut to sane lengths: these are echoed into the page and passed to parsers.
    view, query = counts_query(
        params.get("day", today)[:40], params.get("interval", "15")[:4], params.get("tz", "")[:64]
    )
    if query is not None:
        snapshot = await read_counts(page.redis, page.redis_keys, record.shard, iid, query)
        view.rows = snapshot.dict_rows()
        view.total = sum(int(r["contacts"]) for r in view.rows)
        if view.rows:
            view.chart = build_chart(view.rows, query)
    (status_row,) = await status_rows(
        page.redis, page.redis_keys, [record], page.settings.stale_after_seconds
    )
    revoked_id = params.get("revoked")
    revoked = next((k for k in keys if k["key_id"] == revoked_id), None)
    return page.render(
        "integration.html",
        {
            "title": record.name,
            "record": record,
            "status": status_row,
            "keys": keys,
            "new_key": new_key,
            "saved": params.get("saved") == "1",
            "revoked": revoked,
            "counts": view,
            "intervals": INTERVALS,
        },
        status,
    )


async def get_integration(request: Request) -> Response:
    """Details, status, counts for a day, and the *Install the injixo app* section (with a
    key generated just before, shown this once)."""
    page = signed_in_page(request)
    if page is None:
        return signin_redirect(request)
    iid = request.path_params["iid"]
    sealed = request.cookies.get(NEW_KEY_COOKIE)
    response = await _detail(page, iid, new_key=_unseal_key(page, iid, sealed))
    if sealed is not None:
        response.delete_cookie(NEW_KEY_COOKIE, path=_key_path(iid))
    return response


def _key_path(iid: str) -> str:
    return f"/account/integrations/{quote(iid)}"


def _seal_key(page: Page, iid: str, new_key: dict[str, str]) -> str:
    """The new key for the one page view after the redirect, encrypted (never in clear text
    outside this response and that page)."""
    data = orjson.dumps({"integration": iid, **new_key})
    return Fernet(page.settings.encryption_key.encode()).encrypt(data).decode()


def _unseal_key(page: Page, iid: str, sealed: str | None) -> dict[str, str] | None:
    if not sealed:
        return None
    try:
        data = Fernet(page.settings.encryption_key.encode()).decrypt(sealed, NEW_KEY_SECONDS)
    except InvalidToken:
        return None  # expired, or made with another ENCRYPTION_KEY: just not shown
    found: dict[str, str] = orjson.loads(data)
    return found if found.pop("integration", None) == iid else None


async def post_new_key(request: Request) -> Response:
    """Generate an injixo API key, then redirect to the page that shows it once (a reload
    there neither shows it again nor generates another)."""
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    iid = request.path_params["iid"]
    try:
        new_key = await page.integrations.create_key(iid)
    except NotFound:
        return page.not_found(NO_INTEGRATION)
    except Conflict as exc:
        return page.render("error.html", {"title": "Cannot generate", "message": exc.message}, 409)
    response = RedirectResponse(f"{_key_path(iid)}#install", status_code=303)
    response.set_cookie(
        NEW_KEY_COOKIE,
        _seal_key(page, iid, new_key),
        max_age=NEW_KEY_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=_key_path(iid),
    )
    return response


async def post_revoke_key(request: Request) -> Response:
    """Revoke one key at once, then back to the keys list."""
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    iid, key_id = request.path_params["iid"], request.path_params["key_id"]
    try:
        await page.integrations.revoke_key(iid, key_id)
    except NotFound:
        return page.not_found("There is no such key.")
    target = f"/account/integrations/{quote(iid)}?revoked={quote(key_id)}#install"
    return RedirectResponse(target, status_code=303)
