"""Post/redirect/get: what an action tells the one page view after its 303 redirect.

A form's errors with what was typed (never a secret the user typed), a notice, or a new
key shown once travel Fernet-encrypted in a short-lived HttpOnly cookie scoped to the
target page, which reads and drops it: a reload neither repeats the action nor shows it.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.settings import Settings

FLASH_SECONDS = 120  # the redirect must arrive within this
# Browsers drop a cookie over 4 KiB silently; sealed, this many bytes stay well under it.
MAX_FLASH_BYTES = 2600
TOO_LONG = {"problem": "What was typed is too long to show again. Please type it again."}


def _cookie(path: str) -> str:
    # One name per page: a same-named cookie of a parent path would shadow this one.
    return "ijx_flash_" + hashlib.sha256(path.encode()).hexdigest()[:16]


def redirect(
    request: Request, settings: Settings, target: str, flash: dict[str, Any] | None = None
) -> Response:
    """303 to the GET page `target`, carrying `flash` to its next view."""
    response = RedirectResponse(target, status_code=303)
    if flash:
        path = unquote(urlsplit(target).path)
        data = orjson.dumps({"path": path, **flash})
        if len(data) > MAX_FLASH_BYTES:
            data = orjson.dumps({"path": path, **TOO_LONG})
        sealed = Fernet(settings.encryption_key.encode()).encrypt(data)
        response.set_cookie(
            _cookie(path),
            sealed.decode(),
            max_age=FLASH_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=quote(path),
        )
    return response


def take(request: Request, settings: Settings) -> dict[str, Any]:
    """The flash for this page, or {} (none, expired, or sealed with another key)."""
    path = request.url.path
    sealed = request.cookies.get(_cookie(path))
    if not sealed:
        return {}
    try:
        data = Fernet(settings.encryption_key.encode()).decrypt(sealed, FLASH_SECONDS)
    except InvalidToken:
        return {}
    found = orjson.loads(data)
    if not isinstance(found, dict) or found.pop("path", None) != path:
        return {}
    return found


def drop(request: Request, response: Response) -> Response:
    """Delete this page's flash cookie if the request carried one; returns `response`."""
    name = _cookie(request.url.path)
    if name in request.cookies:
        response.delete_cookie(name, path=quote(request.url.path))
    return response
