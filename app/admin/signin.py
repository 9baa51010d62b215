"""Signing in to the admin page with the admin token, and signing out."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.admin import flash
from app.admin.page import (
    checked_form,
    posted_form,
    render,
    signed_in_page,
)
from app.admin.session import (
    HOME,
    SESSION_COOKIE,
    SESSION_TTL_SECONDS,
    new_session,
    safe_next,
)
from app.auth import token_matches
from app.settings import Settings

SIGNIN_COOKIE = "ijx_admin_signin"
# There is no session yet to bind a CSRF token to, so the form's token is a random value
# echoed in a cookie scoped to /signin (double submit).
SIGNIN_TOKEN_TTL_SECONDS = 3600
SIGNIN_FAILURE_DELAY = 0.3  # slows guessing the admin token through the form


def _signin_form(request: Request, settings: Settings) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        {
            "title": "Sign in",
            "csrf": token,
            "error": flash.take(request, settings).get("error"),
            "next": safe_next(request.query_params.get("next")),
        },
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=SIGNIN_TOKEN_TTL_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/signin",
    )
    return flash.drop(request, response)


async def signin_page(request: Request) -> Response:
    """GET shows the form; POST checks the admin token and starts a session (303 to the
    page asked for, or back to the form saying the token was wrong)."""
    settings: Settings = request.app.state.settings
    if request.method == "GET":
        if signed_in_page(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return _signin_form(request, settings)
    expired = "The sign-in form has expired. Reload the page and try again."
    form = await checked_form(request, request.cookies.get(SIGNIN_COOKIE) or "", expired, 10)
    if isinstance(form, Response):
        return form
    token, nxt = form.get("token"), form.get("next")
    target = safe_next(nxt if isinstance(nxt, str) else None)
    if not token_matches(token if isinstance(token, str) else None, (settings.admin_token,)):
        await asyncio.sleep(SIGNIN_FAILURE_DELAY)
        again = "/signin?" + urlencode({"next": target})
        return flash.redirect(request, settings, again, {"error": "That is not the admin token."})
    response = RedirectResponse(target, 303)
    response.set_cookie(
        SESSION_COOKIE,
        new_session(settings),
        max_age=SESSION_TTL_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",  # the pages and the /rq dashboard
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin")
    return response


async def signout(request: Request) -> Response:
    """End the session (POST with CSRF), then the sign-in form; GET only goes home."""
    if request.method == "GET":
        return RedirectResponse(HOME, status_code=303)
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
