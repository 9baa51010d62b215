"""An integration page's Contacts: a chosen day in a chosen time zone as rows labelled
`08:00-08:15` (en dash), a chart, and the same rows as a CSV download for spreadsheets."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.admin.chart import build_chart, interval_label, interval_starts
from app.admin.page import (
    PAGE_HEADERS,
    Page,
    page_with_integration,
    posted_form,
    sentence,
)
from app.counts import read_counts
from app.errors import BadRequest
from app.integration import Integration
from app.intervals import Query, local_day, parse_query, zone_of

DEFAULT_INTERVAL = 15
# The view's parameters, cut to sane lengths: they are echoed into the page and parsed.
VIEW_PARAMS = {"day": 40, "interval": 4, "tz": 64}
# A spreadsheet reads a cell starting with one of these as a formula (or strips it).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"  # without it Excel reads UTF-8 (the en dash, queue names) as Latin-1


def carried(params: Mapping[str, str]) -> str:
    """The day, interval and zone as a query string (empty ones left out), for the links
    and actions that come back to the page showing them."""
    return urlencode({k: params[k][:n] for k, n in VIEW_PARAMS.items() if params.get(k)})


def integration_url(request: Request, fragment: str = "") -> str:
    """The integration's page, showing the day, interval and zone this request carries."""
    iid = request.path_params["iid"]
    query = carried(request.query_params)
    return f"/account/integrations/{quote(iid)}" + (f"?{query}" if query else "") + fragment


async def posted_to_section(request: Request, section: str) -> tuple[Page, FormData] | Response:
    """An action's signed-in POST with its form, or the response instead; opened with GET,
    the action leads to its section of the integration's page."""
    if request.method == "GET":
        return RedirectResponse(integration_url(request, section), 303)
    return await posted_form(request)


@dataclass
class CountsView:
    """The Contacts section: the chosen day, its labelled rows, total and chart."""

    day: str
    interval: int
    tz: str
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    chart: dict[str, Any] | None = None

    @property
    def carry(self) -> str:
        """This view as a query string."""
        return carried({"day": self.day, "interval": str(self.interval), "tz": self.tz})


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
    view.day = day.isoformat()
    try:
        start, end = local_day(day, zone_of(tz or None))
        query = parse_query(
            start.isoformat(), end.isoformat(), str(view.interval), tz or None, None
        )
    except BadRequest as exc:
        view.error = sentence(exc.message)
        return view, None
    return view, query


def label_rows(rows: list[dict[str, Any]], query: Query) -> None:
    """Give each row its `interval` as the page writes it; on a day whose clock goes back,
    the labels that stand for two intervals get their zone's abbreviation (CEST, CET)."""
    zone = query.zone or UTC
    seen: set[str] = set()
    repeated: set[str] = set()
    for start in interval_starts(query):
        label = interval_label(start, query.interval, zone)
        (repeated if label in seen else seen).add(label)
    for row in rows:
        start = datetime.fromisoformat(row["interval_start"])
        row["interval"] = interval_label(start, query.interval, zone)
        if row["interval"] in repeated:
            row["interval"] += f" {start.astimezone(zone).tzname()}"


async def read_view(page: Page, record: Integration) -> CountsView:
    """The day, interval and zone the request asks for (today in UTC by default), read."""
    params = page.request.query_params
    today = datetime.now(UTC).date().isoformat()
    defaults = {"day": today, "interval": str(DEFAULT_INTERVAL), "tz": ""}
    cut = {k: params.get(k, defaults[k])[:n] for k, n in VIEW_PARAMS.items()}
    view, query = counts_query(cut["day"], cut["interval"], cut["tz"])
    if query is None:
        return view
    snapshot = await read_counts(page.redis, page.redis_keys, record.shard, record.id, query)
    view.rows = snapshot.dict_rows()
    label_rows(view.rows, query)
    view.total = sum(int(r["contacts"]) for r in view.rows)
    if view.rows:
        view.chart = build_chart(view.rows, query)
    return view


def inert(cell: str) -> str:
    """A cell a spreadsheet shows as text, never runs (OWASP's CSV injection advice)."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def page_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as the page shows them, as CSV for a spreadsheet (the API's CSV is exact)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["interval", "interval_start", "queue", "contacts"])
    for row in rows:
        cells = (row["interval"], row["interval_start"], row["queue"])
        writer.writerow([*map(inert, cells), row["contacts"]])
    return BOM + out.getvalue()


def file_name(name: str, day: str) -> str:
    """`injixo-<name>-<day>.csv`, the name in ASCII letters, digits and dashes."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60] or "integration"
    return f"injixo-{slug}-{day}.csv"


async def get_contacts_csv(request: Request) -> Response:
    """The shown day's counts as a CSV file (a GET link, so it works without scripts)."""
    found = await page_with_integration(request)
    if isinstance(found, Response):
        return found
    page, record = found
    view = await read_view(page, record)
    if view.error is not None:
        return page.render("error.html", {"title": "Cannot download", "message": view.error}, 400)
    headers = {
        **PAGE_HEADERS,
        "Content-Disposition": f'attachment; filename="{file_name(record.name, view.day)}"',
    }
    return Response(page_csv(view.rows), media_type="text/csv; charset=utf-8", headers=headers)
