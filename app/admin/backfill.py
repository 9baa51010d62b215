"""The page's *Import history* (§13): the offer after *Save integration*, a range form, the
recent imports with progress bars that follow a small JSON endpoint, and cancel.

Words on the page: an import of past days; Freshchat prepares it as reports of up to
`BACKFILL_WINDOW_DAYS` days (the API's "windows"), and the bar moves one report at a time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.admin.contacts import integration_url, posted_to_section
from app.admin.page import NO_INTEGRATION, Page, sentence, signed_in_page
from app.admin.session import HOME
from app.api_backfill import store_of
from app.backfill_schemas import backfill_out
from app.backfills import TERMINAL
from app.errors import BadRequest, Conflict, NotFound
from app.integration import Integration

SECTION = "#history"
OFFER_DAYS = 28
SHOWN = 10  # imports listed on the page (the store keeps 20)
NO_IMPORT = "There is no such import."
LABELS = {
    "queued": ("Waiting to start", "waiting"),
    "running": ("Importing", "waiting"),
    "done": ("Done", "ok"),
    "failed": ("Failed", "stuck"),
    "cancelled": ("Cancelled", "deleted"),
}


def default_range(retention_days: int, today: date | None = None) -> tuple[str, str]:
    """The last 28 UTC days, ending yesterday (never older than the counts retention)."""
    today = today or datetime.now(UTC).date()
    first = max(today - timedelta(days=OFFER_DAYS), today - timedelta(days=retention_days - 1))
    last = max(first, today - timedelta(days=1))
    return first.isoformat(), last.isoformat()


def _eta(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 5:
        return "a few seconds left"
    if seconds < 90:
        return f"about {seconds} s left"
    return f"about {round(seconds / 60)} min left"


def progress_text(b: dict[str, Any]) -> str:
    """The progress in a sentence."""
    done, total, state = b["windows_done"], b["windows_total"], b["state"]
    reports = f"{done} of {total} report{'' if total == 1 else 's'}"
    chats = f"{b['chats_counted']:,} solved chat{'' if b['chats_counted'] == 1 else 's'}"
    if state == "queued":
        return "Waiting to start."
    if state == "running":
        parts = [f"{reports} imported", f"{chats} so far", _eta(b["eta_seconds"])]
        return " · ".join(p for p in parts if p)
    if state == "done":
        skipped = f", {b['rows_skipped']:,} unreadable rows skipped" if b["rows_skipped"] else ""
        return f"All {total} report{'' if total == 1 else 's'} imported: {chats}{skipped}."
    if state == "cancelled":
        return f"Cancelled after {reports}: {chats} imported."
    return f"Stopped after {reports}: {b['error'] or 'no reason given'}"


def display(record: dict[str, Any]) -> dict[str, Any]:
    """A record with the page's words for it (also the JSON the page's script copies)."""
    # The words are made here only: the script copies them and never writes its own.
    public = backfill_out(record).model_dump(mode="json", by_alias=True)
    label, level = LABELS.get(record["state"], (record["state"], "waiting"))
    return {
        **public,
        "label": label,
        "level": level,
        "finished": record["state"] in TERMINAL,
        "text": progress_text(record),
    }


async def history_view(page: Page, record: Integration) -> dict[str, Any]:
    """The section's context: recent imports, the range form (with what the last post said)."""
    listed = await store_of(page.request).list(record.id)
    first, last = default_range(page.settings.counts_retention_days)
    said = page.flash
    return {
        "rows": [display(b) for b in listed[:SHOWN]],
        "default_from": first,
        "default_to": last,
        "from": said.get("history_from", first),
        "to": said.get("history_to", last),
        "errors": {"from": "", "to": "", **(said.get("history_errors") or {})},
        "problem": said.get("history_problem"),
        "notice": said.get("history_notice"),
        "report_days": page.settings.backfill_window_days,
    }


def _field_of(exc: BadRequest) -> str:
    """The range field an error names (the store's detail: `loc` = ["body", field])."""
    for item in exc.detail:
        loc = item.get("loc") if isinstance(item, dict) else None
        if isinstance(loc, list) and len(loc) == 2 and loc[1] in ("from", "to"):
            return str(loc[1])
    return "from"


async def start_backfill(request: Request) -> Response:
    """*Import* (POST, offer or range form): 303 to the section, showing it or the error."""
    posted = await posted_to_section(request, SECTION)
    if isinstance(posted, Response):
        return posted
    target = integration_url(request, SECTION)
    page, form = posted
    first, last = (str(form.get(name) or "").strip()[:40] for name in ("from", "to"))
    typed = {"history_from": first, "history_to": last}
    given = {name: value for name, value in (("from", first), ("to", last)) if value}
    try:  # an empty field is left out, so the store says it is required
        created = await store_of(request).create(request.path_params["iid"], given)
    except NotFound:
        return page.redirect(HOME, {"problem": NO_INTEGRATION})
    except BadRequest as exc:
        errors = {_field_of(exc): sentence(exc.message)}
        return page.redirect(target, {"history_errors": errors, **typed})
    except Conflict as exc:
        running = any(isinstance(d, dict) and "backfill_id" in d for d in exc.detail)
        problem = (
            "An import of this integration is already under way: wait for it to finish, "
            "or cancel it below."
            if running
            else sentence(exc.message)
        )
        return page.redirect(target, {"history_problem": problem, **typed})
    notice = f"Importing the chats solved from {created['from']} to {created['to']} (UTC days)."
    return page.redirect(target, {"history_notice": notice})


async def cancel_backfill(request: Request) -> Response:
    """*Cancel* (POST): the import stops at its next step; GET goes to the section."""
    posted = await posted_to_section(request, SECTION)
    if isinstance(posted, Response):
        return posted
    target = integration_url(request, SECTION)
    page, _ = posted
    iid, bid = request.path_params["iid"], request.path_params["bid"]
    try:
        await page.integrations.get(iid)
    except NotFound:
        return page.redirect(HOME, {"problem": NO_INTEGRATION})
    try:
        record = await store_of(request).cancel(iid, bid)
    except NotFound:
        return page.redirect(target, {"history_problem": NO_IMPORT})
    except Conflict:
        return page.redirect(target, {"history_notice": "The import had already finished."})
    notice = (
        "The import was cancelled."
        if record["state"] == "cancelled"
        else "The import stops after the step it is on."
    )
    return page.redirect(target, {"history_notice": notice})


def _json(body: dict[str, Any], status: int = 200) -> Response:
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return Response(orjson.dumps(body), status, headers, "application/json")


async def backfill_json(request: Request) -> Response:
    """One import's progress for the page's script (session cookie; reads only, no CSRF)."""
    if signed_in_page(request) is None:
        signed_out = {"error": "Sign in again to follow the import.", "reason": "unauthorized"}
        return _json(signed_out, 401)
    iid, bid = request.path_params["iid"], request.path_params["bid"]
    try:
        record = await store_of(request).get(iid, bid)
    except NotFound:
        return _json({"error": NO_IMPORT, "reason": "not_found"}, 404)
    return _json(display(record))
