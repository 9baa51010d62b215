"""The RQ dashboard at `/rq` (rq-dashboard's Flask blueprint behind a2wsgi), admin only."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import bearer_token, token_matches
from app.settings import Settings

SessionCheck = Callable[[Request], bool]  # True when the request is signed in to the page


def _basic_password(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


class AdminGate:
    """Let a request through only with the admin token (Bearer, or as the Basic password
    so a browser can sign in) or a signed-in admin page session."""

    def __init__(self, app: ASGIApp, settings: Settings, session: SessionCheck) -> None:
        self.app = app
        self.allowed = (settings.admin_token,)
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, then pass on or answer 401."""
        if scope["type"] == "http":
            request = Request(scope)
            ok = token_matches(bearer_token(request), self.allowed) or token_matches(
                _basic_password(request), self.allowed
            )
            if not ok:
                ok = self.session(request)
            if not ok:
                response = Response(
                    b'{"error":"admin token required","reason":"unauthorized"}',
                    status_code=401,
                    media_type="application/json",
                    headers={"WWW-Authenticate": 'Basic realm="injixo RQ dashboard"'},
                )
                await response(scope, receive, send)
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
    flask_app.config["RQ_DASHBOARD_REDIS_URL"] = [settings.redis_url]
    flask_app.config["RQ_DASHBOARD_POLL_INTERVAL"] = 2500
    flask_app.register_blueprint(rq_dashboard.blueprint, url_prefix="")
    with flask_app.app_context():
        setup_rq_connection(flask_app)
    return AdminGate(WSGIMiddleware(flask_app), settings, session)  # type: ignore[arg-type]
