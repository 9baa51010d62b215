"""The admin web page (§7): integrations list, add form, keys, status and counts.

The page follows the help-center article step by step: *Account > Integrations* →
*Add integration* → **Freshworks** tile → **Freshchat** section → form → *Save
integration* → **Install the injixo app** (generate, copy and revoke injixo API keys).

Sign-in uses the admin token; the session cookie holds only an issue time and an HMAC of
it keyed by the admin token (no server-side state, the token itself never leaves the
server). Every POST form carries a CSRF token derived from the session, and a present
`Origin` header must name this host.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from redis.asyncio import Redis
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from app.activity import Activity, is_stale, read_activity
from app.auth import token_matches
from app.counts import INTERVALS, Query, parse_query, read_counts
from app.domains import normalise_domain
from app.errors import BadRequest, Conflict, FreshchatUnreachable, NotFound, UpstreamError
from app.freshchat import verify_api_key
from app.integration import Integration, NewIntegration
from app.integrations import Integrations, clean_name
from app.redis_keys import RedisKeys
from app.settings import Settings

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)

SESSION_COOKIE = "ijx_admin_session"
SIGNIN_COOKIE = "ijx_admin_signin"
SESSION_TTL_SECONDS = 12 * 3600
SIGNIN_FAILURE_DELAY = 0.3
MAX_FIELD_CHARS = 4096
MAX_FORM_BYTES = 64 * 1024

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

# Okabe-Ito and friends: distinguishable for most colour-vision deficiencies.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
)


# --- Status helpers (shared with the ingest side / metrics) ----------------------------


async def shard_backlog(redis: Redis, keys: RedisKeys, shards: set[int]) -> dict[int, int]:
    """Shard -> pending (not yet counted) events in its stream."""
    ordered = sorted(shards)
    if not ordered:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for shard in ordered:
            pipe.xlen(keys.stream(shard))
        lengths = await pipe.execute()
    return {shard: int(n) for shard, n in zip(ordered, lengths, strict=True)}


@dataclass(frozen=True)
class Health:
    """What the page says about an integration's traffic."""

    level: str  # ok | waiting | warning | deleted
    text: str


def health(
    record: Integration,
    last_event: int | None,
    failures: int,
    now: float,
    stale_after: int = 24 * 3600,
    last_failure_at: int | None = None,
) -> Health:
    """Flag an integration whose app stopped sending, or that sees only auth failures (§8);
    the decision is `app.activity.is_stale`, the same one the API and metrics use."""
    if not record.active:
        return Health("deleted", "Deleted")
    activity = Activity(last_event, failures, last_failure_at)
    if not is_stale(record, activity, now, stale_after):
        if last_event is None:
            return Health("waiting", "Waiting for the first event")
        return Health("ok", "Receiving events")
    hours = max(1, round(stale_after / 3600))
    if last_event is None:
        if failures:
            return Health(
                "warning", "Only rejected requests so far: check the injixo API key in the app"
            )
        return Health("warning", f"No events received in the {hours} h since setup")
    if (
        last_failure_at is not None
        and last_failure_at > last_event
        and now - last_event <= stale_after
    ):
        return Health(
            "warning", "Only rejected requests lately: check the injixo API key in the app"
        )
    more = " (and rejected requests since)" if failures else ""
    return Health("warning", f"No events for more than {hours} h{more}")


# --- Sessions and CSRF -----------------------------------------------------------------


def _mac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_session(settings: Settings, now: float | None = None) -> str:
    """A session value: issue time and its HMAC keyed by the admin token."""
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{_mac(settings.admin_token, 'session:' + issued)}"


def session_valid(settings: Settings, value: str | None, now: float | None = None) -> bool:
    """The value was issued by us (with the current admin token) and has not expired."""
    if not value or value.count(".") != 1:
        return False
    issued, signature = value.split(".")
    if not issued.isdigit() or len(issued) > 12:
        return False
    expected = _mac(settings.admin_token, "session:" + issued)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return False
    age = (time.time() if now is None else now) - int(issued)
    return -60 <= age < SESSION_TTL_SECONDS


def csrf_token(settings: Settings, session: str) -> str:
    """The per-session CSRF token for hidden form fields."""
    return _mac(settings.admin_token, "csrf:" + session)


def _same_origin(request: Request) -> bool:
    """No Origin header, or one naming this very host; cross-site fetches are refused."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


def _form_too_large(request: Request) -> Response | None:
    """Forms are small: refuse a body over the limit (or of unknown size) before parsing."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= MAX_FORM_BYTES:
        return None
    return render(
        request, "error.html", {"title": "Too large", "message": "The form is too large."}, 413
    )


def _safe_next(value: str | None) -> str:
    """A local path to return to after sign-in (never another site)."""
    fallback = "/account/integrations"
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return fallback
    if any(c == "\\" or not c.isprintable() or c.isspace() for c in value):
        return fallback  # browsers drop tabs/newlines and read "\\" as "/": "/\t/x" is "//x"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else fallback


@dataclass
class Page:
    """What every signed-in page needs."""

    request: Request
    settings: Settings
    integrations: Integrations
    session: str
    csrf: str = field(init=False)

    def __post_init__(self) -> None:
        self.csrf = csrf_token(self.settings, self.session)

    @property
    def redis(self) -> Redis:
        """The app's Redis client."""
        return self.integrations.redis

    @property
    def keys(self) -> RedisKeys:
        """Redis key names."""
        return self.integrations.redis_keys

    def render(self, name: str, context: dict[str, Any], status: int = 200) -> Response:
        """A template response with the CSRF token and the security headers."""
        return render(self.request, name, {"csrf": self.csrf, "signed_in": True, **context}, status)


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with the page headers (no caching, strict CSP)."""
    base = {"csrf": "", "signed_in": False}
    return TEMPLATES.TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=PAGE_HEADERS
    )


def _forbidden(request: Request, why: str) -> Response:
    return render(request, "error.html", {"title": "Forbidden", "message": why}, 403)


def _signin_redirect(request: Request) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if request.method != "GET":
        target = "/account/integrations"
    return RedirectResponse("/signin?next=" + quote(target, safe=""), status_code=303)


def _page(request: Request) -> Page | None:
    settings: Settings = request.app.state.settings
    session = request.cookies.get(SESSION_COOKIE)
    if session is None or not session_valid(settings, session):
        return None
    return Page(request, settings, request.app.state.integrations, session)


async def _posted(request: Request) -> tuple[Page, FormData] | Response:
    """A signed-in POST with a matching CSRF token and origin, or the response refusing it."""
    page = _page(request)
    if page is None:
        return _signin_redirect(request)
    if not _same_origin(request):
        return _forbidden(request, "The request came from another site.")
    too_large = _form_too_large(request)
    if too_large is not None:
        return too_large
    form = await request.form(max_files=0, max_fields=20)
    token = form.get("csrf")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), page.csrf.encode()):
        return _forbidden(request, "The form has expired or was not sent by this page. Reload.")
    return page, form


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] if message else message


# --- Sign-in ---------------------------------------------------------------------------


async def home(request: Request) -> Response:
    """`/` -> the integrations list."""
    return RedirectResponse("/account/integrations", status_code=303)


def _signin_form(request: Request, error: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        {
            "title": "Sign in",
            "csrf": token,
            "error": error,
            "next": _safe_next(request.query_params.get("next")),
        },
        status,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/signin",
    )
    return response


async def signin(request: Request) -> Response:
    """GET shows the form; POST checks the admin token and starts a session."""
    settings: Settings = request.app.state.settings
    if request.method == "GET":
        if _page(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")), 303)
        return _signin_form(request, None, 200)
    if not _same_origin(request):
        return _forbidden(request, "The request came from another site.")
    too_large = _form_too_large(request)
    if too_large is not None:
        return too_large
    form = await request.form(max_files=0, max_fields=10)
    sent, cookie = form.get("csrf"), request.cookies.get(SIGNIN_COOKIE) or ""
    if not (
        isinstance(sent, str) and cookie and hmac.compare_digest(sent.encode(), cookie.encode())
    ):
        return _forbidden(request, "The sign-in form has expired. Reload the page and try again.")
    token = form.get("token")
    if not token_matches(token if isinstance(token, str) else None, (settings.admin_token,)):
        await asyncio.sleep(SIGNIN_FAILURE_DELAY)
        return _signin_form(request, "That is not the admin token.", 401)
    nxt = form.get("next")
    response = RedirectResponse(_safe_next(nxt if isinstance(nxt, str) else None), 303)
    response.set_cookie(
        SESSION_COOKIE,
        new_session(settings),
        max_age=SESSION_TTL_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


async def signout(request: Request) -> Response:
    """End the session (POST with CSRF)."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- Integrations list and the add flow -----------------------------------------------


async def _statuses(page: Page, records: list[Integration]) -> list[dict[str, Any]]:
    activity = await read_activity(page.redis, page.keys)
    backlog = await shard_backlog(page.redis, page.keys, {r.shard for r in records})
    now = time.time()
    out = []
    for record in records:
        iid = record.id
        act = activity.get(iid)
        last = act.last_event_at if act else None
        failures = act.auth_failures if act else 0
        failed_at = act.last_auth_failure_at if act else None
        out.append(
            {
                "record": record,
                "last_event": last,
                "auth_failures": failures,
                "pending_shard": backlog.get(record.shard, 0),
                "health": health(
                    record, last, failures, now, page.settings.stale_after_seconds, failed_at
                ),
            }
        )
    return out


async def integrations_list(request: Request) -> Response:
    """Account > Integrations; the Freshworks tile right away when there is none."""
    page = _page(request)
    if page is None:
        return _signin_redirect(request)
    records = [r for r in await page.integrations.all() if r.active]
    rows = await _statuses(page, records)
    return page.render("integrations.html", {"title": "Integrations", "rows": rows})


async def add_models(request: Request) -> Response:
    """Step: the Freshworks tile with *Select model*."""
    page = _page(request)
    if page is None:
        return _signin_redirect(request)
    return page.render("add_models.html", {"title": "Add integration"})


async def add_freshworks(request: Request) -> Response:
    """Step: the Freshchat section with *Add integration*."""
    page = _page(request)
    if page is None:
        return _signin_redirect(request)
    return page.render("add_freshworks.html", {"title": "Freshworks"})


def _form(
    page: Page, values: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    return page.render(
        "add_freshchat.html",
        {"title": "Add a Freshchat integration", "values": values, "errors": errors},
        status,
    )


async def add_freshchat(request: Request) -> Response:
    """The form (GET) and *Save integration* (POST), with inline errors per field."""
    if request.method == "GET":
        page = _page(request)
        if page is None:
            return _signin_redirect(request)
        return _form(page, {"name": "", "freshchat_domain": ""}, {})
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    name, domain = _field(form, "name"), _field(form, "freshchat_domain")
    api_key = _field(form, "freshchat_api_key")
    values = {"name": name, "freshchat_domain": domain}  # never the API key
    errors: dict[str, str] = {}
    try:
        clean_name(name)
    except BadRequest as exc:
        errors["name"] = _sentence(exc.message)
    try:
        normalise_domain(domain, page.settings.freshchat_allow_insecure)
    except BadRequest as exc:
        errors["freshchat_domain"] = _sentence(exc.message)
    if not api_key.strip():
        errors["freshchat_api_key"] = (
            "Paste the API key of a Freshchat user with the Account Administrator role"
        )
    if errors:
        return _form(page, values, errors, 400)
    try:
        new = NewIntegration(name=name, freshchat_domain=domain, freshchat_api_key=api_key)
        record = await page.integrations.create(new, verify_api_key)
    except Conflict as exc:
        errors["name"] = _sentence(exc.message) + ": choose another name"
        return _form(page, values, errors, 409)
    except FreshchatUnreachable as exc:
        errors["freshchat_domain"] = _sentence(exc.message)
        return _form(page, values, errors, 502)
    except UpstreamError as exc:
        errors["freshchat_api_key"] = _sentence(exc.message)
        return _form(page, values, errors, 400)
    except BadRequest as exc:
        errors["form"] = _sentence(exc.message)
        return _form(page, values, errors, 400)
    return RedirectResponse(f"/account/integrations/{record.id}?saved=1#install", 303)


# --- One integration: status, counts, keys ---------------------------------------------


def _fmt_time(value: int | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


TEMPLATES.env.filters["when"] = _fmt_time


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


def _counts_query(day_text: str, interval_text: str, tz: str) -> tuple[CountsView, Query | None]:
    view = CountsView(day=day_text, interval=15, tz=tz)
    try:
        view.interval = int(interval_text) if interval_text else 15
    except ValueError:
        view.interval = 15
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        view.error = "Choose a day (YYYY-MM-DD)"
        return view, None
    following = day + timedelta(days=1)
    try:
        query = parse_query(
            f"{day.isoformat()}T00:00:00",
            f"{following.isoformat()}T00:00:00",
            str(view.interval),
            tz or None,
            None,
        )
    except BadRequest as exc:
        view.error = _sentence(exc.message)
        return view, None
    return view, query


def _nice_step(top: int) -> int:
    """A 1/2/5 x 10^n step giving at most five grid lines up to `top`."""
    raw = max(1.0, top / 5)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return int(factor * power)
    return int(10 * power)


def build_chart(rows: list[dict[str, Any]], query: Query) -> dict[str, Any]:
    """Stacked bars per interval (one colour per queue) as shapes for an inline SVG."""
    zone = query.zone or UTC
    step = timedelta(minutes=query.interval)
    starts: list[datetime] = []
    moment = query.start.astimezone(UTC)
    while moment < query.end.astimezone(UTC):
        starts.append(moment)
        moment += step
    queues = sorted({row["queue"] for row in rows})
    colour = {q: PALETTE[i % len(PALETTE)] for i, q in enumerate(queues)}
    cells: dict[tuple[int, str], int] = {}
    for row in rows:
        at = int(datetime.fromisoformat(row["interval_start"]).timestamp())
        cells[(at, row["queue"])] = cells.get((at, row["queue"]), 0) + int(row["contacts"])
    totals = [sum(cells.get((int(s.timestamp()), q), 0) for q in queues) for s in starts]
    peak = max(totals, default=0)
    grid = _nice_step(max(peak, 1))
    top = max(grid, math.ceil(max(peak, 1) / grid) * grid)
    width, height = 960, 280
    left, right, upper, lower = 44, 8, 12, 34
    plot_w, plot_h = width - left - right, height - upper - lower
    slot_w = plot_w / max(1, len(starts))
    bar_w = max(1.0, slot_w * 0.8)
    bars: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    label_every = max(1, len(starts) // 12)
    for index, start in enumerate(starts):
        x = left + index * slot_w + (slot_w - bar_w) / 2
        base: float = upper + plot_h
        local = start.astimezone(zone).strftime("%H:%M")
        for queue in queues:
            n = cells.get((int(start.timestamp()), queue), 0)
            if not n:
                continue
            h = plot_h * n / top
            base -= h
            bars.append(
                {
                    "x": round(x, 2),
                    "y": round(base, 2),
                    "w": round(bar_w, 2),
                    "h": round(h, 2),
                    "fill": colour[queue],
                    "title": f"{local} {queue}: {n}",
                }
            )
        if index % label_every == 0:
            labels.append({"x": round(left + index * slot_w + slot_w / 2, 2), "text": local})
    ticks = [
        {"y": round(upper + plot_h - plot_h * v / top, 2), "text": str(v)}
        for v in range(0, top + 1, grid)
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "bottom": upper + plot_h,
        "bars": bars,
        "labels": labels,
        "label_y": upper + plot_h + 20,
        "ticks": ticks,
        "legend": [{"queue": q, "fill": colour[q]} for q in queues],
    }


async def _detail(
    page: Page, iid: str, new_key: dict[str, str] | None = None, status: int = 200
) -> Response:
    try:
        record = await page.integrations.get(iid)
        found: Any = await page.integrations.list_keys(iid)  # Any: see integrations.list
        keys: list[dict[str, Any]] = list(found)
    except NotFound:
        return page.render(
            "error.html", {"title": "Not found", "message": "There is no such integration."}, 404
        )
    params = page.request.query_params
    today = datetime.now(UTC).date().isoformat()
    view, query = _counts_query(
        params.get("day", today)[:40], params.get("interval", "15")[:4], params.get("tz", "")[:64]
    )
    if query is not None:
        view.rows = await read_counts(page.redis, page.keys, record.shard, iid, query)
        view.total = sum(int(r["contacts"]) for r in view.rows)
        if view.rows:
            view.chart = build_chart(view.rows, query)
    (status_row,) = await _statuses(page, [record])
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


async def integration_page(request: Request) -> Response:
    """Details, status, counts for a day, and the *Install the injixo app* section."""
    page = _page(request)
    if page is None:
        return _signin_redirect(request)
    return await _detail(page, request.path_params["iid"])


async def generate_key(request: Request) -> Response:
    """Generate an injixo API key and show it in this response only (no-store)."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    iid = request.path_params["iid"]
    try:
        new_key = await page.integrations.create_key(iid)
    except NotFound:
        return page.render(
            "error.html", {"title": "Not found", "message": "There is no such integration."}, 404
        )
    except Conflict as exc:
        return page.render("error.html", {"title": "Cannot generate", "message": exc.message}, 409)
    return await _detail(page, iid, new_key=new_key)


async def revoke_key(request: Request) -> Response:
    """Revoke one key at once, then back to the keys list."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    iid, key_id = request.path_params["iid"], request.path_params["key_id"]
    try:
        await page.integrations.revoke_key(iid, key_id)
    except NotFound:
        return page.render(
            "error.html", {"title": "Not found", "message": "There is no such key."}, 404
        )
    target = f"/account/integrations/{quote(iid)}?revoked={quote(key_id)}#install"
    return RedirectResponse(target, status_code=303)


PAGE_ROUTES: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/signin", signin, methods=["GET", "POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route("/account/integrations", integrations_list, methods=["GET"]),
    Route("/account/integrations/new", add_models, methods=["GET"]),
    Route("/account/integrations/new/freshworks", add_freshworks, methods=["GET"]),
    Route("/account/integrations/new/freshworks/freshchat", add_freshchat, methods=["GET", "POST"]),
    Route("/account/integrations/{iid}", integration_page, methods=["GET"]),
    Route("/account/integrations/{iid}/keys", generate_key, methods=["POST"]),
    Route("/account/integrations/{iid}/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
]
