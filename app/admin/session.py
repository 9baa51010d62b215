"""Sessions and CSRF for the admin page: signed cookies, tokens, same-origin, safe `next`.

The session cookie holds only an issue time and an HMAC of it keyed by the admin token:
no server-side state, the token itself never leaves the server, and changing the admin
token ends every session. Every POST form carries a CSRF token derived from the session.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request

from app.settings import Settings

SESSION_COOKIE = "ijx_admin_session"
SESSION_TTL_SECONDS = 12 * 3600
CLOCK_SKEW_SECONDS = 60  # a session "issued" slightly in the future is still ours
HOME = "/account/integrations"


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
    return -CLOCK_SKEW_SECONDS <= age < SESSION_TTL_SECONDS


def request_session(settings: Settings, request: Request) -> str | None:
    """The request's session value when it is valid, else None."""
    value = request.cookies.get(SESSION_COOKIE)
    return value if session_valid(settings, value) else None


def session_check(settings: Settings) -> Callable[[Request], bool]:
    """The sign-in check for other mounts (the /rq dashboard): the pages' own check."""

    def signed_in(request: Request) -> bool:
        return request_session(settings, request) is not None

    return signed_in


def csrf_token(settings: Settings, session: str) -> str:
    """The per-session CSRF token for hidden form fields."""
    return _mac(settings.admin_token, "csrf:" + session)


def tokens_match(sent: object, expected: str) -> bool:
    """A posted token equals the expected one (constant time; an empty one never matches)."""
    return (
        isinstance(sent, str)
        and bool(expected)
        and hmac.compare_digest(sent.encode(), expected.encode())
    )


def _names_this_host(url: str, host: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


def origin_of(request: Request) -> bool | None:
    """True when the request says it comes from this very origin, False when it names
    another (cross-site, or same-site such as another port of this host), None when it
    says nothing (no Sec-Fetch-Site, Origin or Referer: a script, not a browser)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:  # set by the browser itself, so it outranks the others
        return site == "same-origin"
    host = request.headers.get("host", "")
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value is not None:
            return _names_this_host(value, host)  # "null" (an opaque origin) names none
    return None


def same_origin(request: Request) -> bool:
    """Not from another origin (a form also carries a CSRF token, so silence passes)."""
    return origin_of(request) is not False


def safe_next(value: str | None) -> str:
    """A local path to return to after sign-in (never another site)."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//"):
        return HOME
    if any(c == "\\" or not c.isprintable() or c.isspace() for c in value):
        return HOME  # browsers drop tabs/newlines and read "\\" as "/": "/\t/x" is "//x"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else HOME
