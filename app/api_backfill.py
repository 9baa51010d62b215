"""`/v1/integrations/{id}/backfills`: import an integration's history from Freshchat (§13)."""

from __future__ import annotations

from typing import Any

from pydantic import RootModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import admin_of, json_response, parse_json
from app.backfill_schemas import BackfillList, backfill_out
from app.backfills import AsyncBackfills, Backfills


class AnyJson(RootModel[Any]):
    """Any JSON value: the store checks the body itself and names the field (`body.from`)."""


def store_of(request: Request) -> AsyncBackfills:
    """The backfill store on the web process's sync Redis, its calls run in threads."""
    # Sync, because creating a backfill enqueues an RQ job and RQ is synchronous.
    ingest = request.app.state.ingest
    return AsyncBackfills(Backfills(ingest.sync_redis, request.app.state.settings, rq=ingest.rq))


async def backfills(request: Request) -> Response:
    """POST starts a backfill (202); GET lists the integration's, newest first."""
    admin_of(request)
    store, iid = store_of(request), request.path_params["iid"]
    if request.method == "POST":
        body = parse_json(await request.body(), AnyJson).root
        return json_response(backfill_out(await store.create(iid, body)), 202)
    listed = await store.list(iid)
    return json_response(BackfillList(backfills=[backfill_out(b) for b in listed]))


async def backfill(request: Request) -> Response:
    """GET one backfill's progress; DELETE cancels it (202: it ends at its next step)."""
    admin_of(request)
    store = store_of(request)
    iid, bid = request.path_params["iid"], request.path_params["bid"]
    if request.method == "DELETE":
        return json_response(backfill_out(await store.cancel(iid, bid)), 202)
    return json_response(backfill_out(await store.get(iid, bid)))


ROUTES = [
    Route("/v1/integrations/{iid}/backfills", backfills, methods=["GET", "POST"]),
    Route("/v1/integrations/{iid}/backfills/{bid}", backfill, methods=["GET", "DELETE"]),
]
