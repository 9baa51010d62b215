"""What every admin page shares: templates, security headers, the signed-in `Page`, guards."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from redis.asyncio import Redis
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from app.admin import flash
from app.admin.session import HOME, csrf_token, request_session, same_origin, tokens_match
from app.errors import NotFound
from app.integration import Integration
from app.integrations import Integrations
from app.redis_keys import RedisKeys
from app.settings import Settings

APP_DIR = Path(__file__).parent.parent
NO_INTEGRATION = "There is no such integration."
MAX_FIELD_CHARS = 4096
MAX_FORM_BYTES = 64 * 1024

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _when(value: int | None) -> str:
    """A Unix time as the page shows it."""
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(value: int | None) -> str:
    """A Unix time as ISO 8601 UTC, for a `<time datetime>` attribute."""
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(APP_DIR / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page
    )
)
TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["iso"] = _iso


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with the page headers (no caching, strict CSP)."""
    base = {"csrf": "", "signed_in": False, "notice": None, "problem": None}
    return TEMPLATES.TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=PAGE_HEADERS
    )


@dataclass
class Page:
    """What every signed-in page needs."""

    request: Request
    settings: Settings
    integrations: Integrations
    session: str
    csrf: str = field(init=False)
    flash: dict[str, Any] = field(init=False)  # what the action before the redirect said

    def __post_init__(self) -> None:
        self.csrf = csrf_token(self.settings, self.session)
        self.flash = flash.take(self.request, self.settings)

    @property
    def redis(self) -> Redis:
        """The app's Redis client."""
        return self.integrations.redis

    @property
    def redis_keys(self) -> RedisKeys:
        """Redis key names."""
        return self.integrations.redis_keys

    def render(self, name: str, context: dict[str, Any], status: int = 200) -> Response:
        """A template response with the CSRF token, the flash's notice and the security
        headers; the flash is dropped, so a reload shows it no more."""
        said = {k: self.flash.get(k) for k in ("notice", "problem")}
        base = {"csrf": self.csrf, "signed_in": True, **said}
        response = render(self.request, name, {**base, **context}, status)
        return flash.drop(self.request, response)

    def redirect(self, target: str, message: dict[str, Any] | None = None) -> Response:
        """303 to the GET page `target`, with `message` for its next view."""
        return flash.redirect(self.request, self.settings, target, message)

    def not_found(self, message: str) -> Response:
        """The 404 page."""
        return self.render("error.html", {"title": "Not found", "message": message}, 404)


def signed_in_page(request: Request) -> Page | None:
    """The page context when the request carries a valid session, else None."""
    settings: Settings = request.app.state.settings
    session = request_session(settings, request)
    if session is None:
        return None
    return Page(request, settings, request.app.state.integrations, session)


async def page_with_integration(request: Request) -> tuple[Page, Integration] | Response:
    """The signed-in page and the integration its path names, or the response instead: the
    sign-in form, a 404 page, or (after a POST) the list saying the integration is gone."""
    page = signed_in_page(request)
    if page is None:
        return signin_redirect(request)
    try:
        return page, await page.integrations.get(request.path_params["iid"])
    except NotFound:
        if request.method == "GET":
            return page.not_found(NO_INTEGRATION)
        return page.redirect(HOME, {"problem": NO_INTEGRATION})


def forbidden(request: Request, why: str) -> Response:
    """The 403 page."""
    return render(request, "error.html", {"title": "Forbidden", "message": why}, 403)


def signin_redirect(request: Request) -> Response:
    """To the sign-in form, coming back here afterwards (to the list after a POST)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if request.method != "GET":
        target = HOME  # a POST cannot be replayed by a redirect
    return RedirectResponse("/signin?next=" + quote(target, safe=""), status_code=303)


def form_too_large(request: Request) -> Response | None:
    """Forms are small: refuse a body over the limit (or of unknown size) before parsing."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= MAX_FORM_BYTES:
        return None
    return render(
        request, "error.html", {"title": "Too large", "message": "The form is too large."}, 413
    )


async def checked_form(
    request: Request, csrf: str, expired: str, max_fields: int = 20
) -> FormData | Response:
    """A same-origin form of a sane size whose `csrf` field is `csrf`, or the refusal."""
    if not same_origin(request):
        return forbidden(request, "The request came from another site.")
    too_large = form_too_large(request)
    if too_large is not None:
        return too_large
    form = await request.form(max_files=0, max_fields=max_fields)
    if not tokens_match(form.get("csrf"), csrf):
        return forbidden(request, expired)
    return form


async def posted_form(request: Request) -> tuple[Page, FormData] | Response:
    """A signed-in POST with a matching CSRF token and origin, or the response refusing it."""
    page = signed_in_page(request)
    if page is None:
        return signin_redirect(request)
    expired = "The form has expired or was not sent by this page. Reload."
    form = await checked_form(request, page.csrf, expired)
    return form if isinstance(form, Response) else (page, form)


def form_field(form: FormData, name: str) -> str:
    """A text field, cut to a sane length (a file or a missing field reads as empty)."""
    value = form.get(name)
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""


def sentence(message: str) -> str:
    """A domain error message as the page shows it: capitalised."""
    return message[:1].upper() + message[1:] if message else message
