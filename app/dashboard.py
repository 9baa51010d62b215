"""The RQ dashboard at `/rq` (rq-dashboard's Flask blueprint behind a2wsgi), admin only;
what changes state (requeue, empty, delete) only from its own pages or a script."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.admin.session import origin_of
from app.auth import bearer_token, token_matches
from app.settings import Settings

SessionCheck = Callable[[Request], bool]  # True when the request is signed in to the page
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# rq-dashboard's "requeue all" answers GET as well as POST (its own script POSTs).
STATE_CHANGING_GETS = ("/requeue/",)


def _basic_password(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": "admin token required", "reason": "unauthorized"},
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="injixo RQ dashboard"'},
    )


def _cross_site() -> Response:
    error = "a request that changes state must come from the dashboard's own pages"
    return JSONResponse({"error": error, "reason": "cross_site"}, status_code=403)


def changes_state(scope: Scope) -> bool:
    """Anything but a read (the path as the dashboard sees it, below the mount)."""
    if scope["method"] not in SAFE_METHODS:
        return True
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    inner = path[len(root) :] if path.startswith(root) else path
    return inner.startswith(STATE_CHANGING_GETS)


class AdminGate:
    """Let a request through only with the admin token (Bearer, or as the Basic password
    so a browser can sign in) or a signed-in admin page session; one that changes state
    also only from this origin, or, saying nothing of where it comes from, by Bearer."""

    def __init__(self, app: ASGIApp, settings: Settings, session: SessionCheck) -> None:
        self.app = app
        self.allowed = (settings.admin_token,)
        self.session = session

    def refusal(self, scope: Scope) -> Response | None:
        """401 without credentials, 403 for a state change from elsewhere, else None."""
        request = Request(scope)
        bearer = token_matches(bearer_token(request), self.allowed)
        if not (
            bearer or token_matches(_basic_password(request), self.allowed) or self.session(request)
        ):
            return _unauthorized()
        if not changes_state(scope):
            return None
        # A browser attaches the session cookie (same-site pages, e.g. another port of this
        # host) and cached Basic credentials (any site) by itself: only what names this
        # origin passes, or a request that names none and carries the token explicitly.
        origin = origin_of(request)
        return None if origin or (origin is None and bearer) else _cross_site()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, then pass on or answer 401/403."""
        if scope["type"] == "http":
            refused = self.refusal(scope)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def dashboard_app(settings: Settings, session: SessionCheck) -> ASGIApp:
    """rq-dashboard as an ASGI app for mounting at /rq; `session` is the admin page's
    sign-in check (required, so the mount cannot silently drop the page's session)."""
    import rq_dashboard  # imported lazily: Flask is only needed when the dashboard is served
    from a2wsgi import WSGIMiddleware
    from flask import Flask
    from rq_dashboard.web import setup_rq_connection

    # rq-dashboard's templates link their CSS and scripts through the app's `static`
    # endpoint, which serves the app's own (empty) folder: point it at the package's.
    assets = Path(rq_dashboard.__file__).resolve().parent / "static"
    flask_app = Flask("injixo_rq_dashboard", static_folder=str(assets))
    flask_app.config["RQ_DASHBOARD_REDIS_URL"] = [settings.rq_url]  # RQ's own Redis (§14)
    flask_app.config["RQ_DASHBOARD_POLL_INTERVAL"] = 2500
    flask_app.register_blueprint(rq_dashboard.blueprint, url_prefix="")
    with flask_app.app_context():
        setup_rq_connection(flask_app)
    return AdminGate(WSGIMiddleware(flask_app), settings, session)  # type: ignore[arg-type]
