"""The bare endpoint of §10, written the way a user would write it: a Starlette route that
checks the Bearer header and calls `Model.model_validate_json(body)` on a pydantic model of
the fields §3 lists, then answers 202 (no Redis, not the product's parser).

Run with uvicorn exactly like the real app (one process, same flags):
    python -m uvicorn bench.bare:bare_app ...      (BENCH_API_KEY: the Bearer key)
    python -m uvicorn bench.bare:bare_raw_app ...  (info: the same, served like the real one)
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.ingest import EVENTS_PATH


class BareGroup(BaseModel):
    """`data.associations.group`."""

    id: str | None = None
    name: str | None = None


class BareAssociations(BaseModel):
    """`data.associations`."""

    group: BareGroup | None = None


class BareChanges(BaseModel):
    """`data.changes`."""

    model_changes: dict[str, Any] | None = None


class BareConversation(BaseModel):
    """`data.conversation`, the fields §3 lists."""

    conversation_id: str
    app_id: str | None = None
    channel_id: str | None = None
    status: str | None = None
    assigned_group_id: str | None = None
    assigned_agent_id: str | None = None
    created_time: datetime | None = None
    resolved_time: datetime | None = None
    reopened_time: datetime | None = None


class BareData(BaseModel):
    """`data`."""

    conversation: BareConversation
    associations: BareAssociations | None = None
    changes: BareChanges | None = None


class BareEvent(BaseModel):
    """One Freshworks product event as §3 lists it (seconds, milliseconds or ISO time)."""

    event: str
    timestamp: float | str
    data: BareData


_BARE_BATCH = TypeAdapter(list[BareEvent])  # an array body: what a user adds for batches


@cache
def _api_key() -> bytes:
    return os.environ.get("BENCH_API_KEY", "").encode()


def _authorized(authorization: str) -> bool:
    """The Bearer check (constant time)."""
    scheme, _, key = authorization.partition(" ")
    return scheme == "Bearer" and secrets.compare_digest(key.encode("latin-1"), _api_key())


def validate(body: bytes) -> int:
    """`model_validate_json` of one event, or of each event of an array; how many."""
    if body.lstrip()[:1] == b"[":
        return len(_BARE_BATCH.validate_json(body))
    BareEvent.model_validate_json(body)
    return 1


async def bare(request: Request) -> Response:
    """The §10 bare endpoint: a Starlette route, Bearer check, `model_validate_json`, 202."""
    if not _authorized(request.headers.get("authorization", "")):
        return JSONResponse({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})
    try:
        accepted = validate(await request.body())
    except ValidationError as exc:
        return Response(exc.json(include_url=False), 400, media_type="application/json")
    return JSONResponse({"accepted": accepted, "ignored": 0}, status_code=202)


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def bare_raw(scope: Scope, receive: Receive, send: Send) -> None:
    """`bare` written as a plain ASGI handler, the way the real endpoint is served."""
    authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    headers = [(b"content-type", b"application/json")]
    if not _authorized(authorization):
        status, out = 401, b'{"error":"unauthorized"}'
        headers.append((b"www-authenticate", b"Bearer"))
    else:
        try:
            accepted = validate(await _read(receive))
            status, out = 202, b'{"accepted":%d,"ignored":0}' % accepted
        except ValidationError as exc:
            status, out = 400, exc.json(include_url=False).encode()
    headers.append((b"content-length", b"%d" % len(out)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": out})


class _RawFirst(Starlette):
    """Dispatches the events path ahead of the middleware stack, as `app.main.App` does."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == EVENTS_PATH and scope["method"] == "POST":
            await bare_raw(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


bare_app = Starlette(routes=[Route(EVENTS_PATH, bare, methods=["POST"])])
bare_raw_app = _RawFirst(routes=[])
