"""Admin API (§7) and the counts read API (§6)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.auth import require_token
from app.changes import parse_revision, read_changes
from app.counts import csv_chunks, json_chunks, read_counts, read_queues
from app.deliveries import read_deliveries
from app.errors import BadRequest
from app.explain import explain
from app.freshchat import verify_api_key
from app.integration import Integration, IntegrationChanges, NewIntegration
from app.integrations import Integrations
from app.intervals import parse_query
from app.schemas import (
    ApiKeyCreated,
    ApiKeyList,
    ChangesOut,
    ChatExplained,
    DeliveryList,
    IntegrationList,
    IntegrationOut,
    Queues,
)
from app.settings import Settings
from app.state import read_states

_DELIVERY_ID = re.compile(r"\d{1,15}-\d{1,10}")


class IntegrationIn(NewIntegration):
    """Body of `POST /v1/integrations`."""

    verify: bool = True


class IntegrationPatch(IntegrationChanges):
    """Body of `PATCH /v1/integrations/{id}`."""

    verify: bool = True


def parse_json(request_body: bytes, model: type[BaseModel]) -> Any:
    """The body as `model`; BadRequest naming each bad field (never echoing the input)."""
    try:
        return model.model_validate_json(request_body or b"{}")
    except ValidationError as exc:
        detail = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise BadRequest("invalid request body", detail) from None


def _state(request: Request) -> tuple[Settings, Integrations]:
    settings: Settings = request.app.state.settings
    return settings, request.app.state.integrations


def admin_of(request: Request) -> Integrations:
    """The integration store, for a request with the admin token (else 401)."""
    settings, integrations = _state(request)
    require_token(request, (settings.admin_token,))
    return integrations


def reader_of(request: Request) -> Integrations:
    """The integration store, for a request with the admin or a reader token (else 401)."""
    settings, integrations = _state(request)
    require_token(request, (settings.admin_token, *settings.reader_token_list))
    return integrations


def json_response(body: BaseModel, status: int = 200) -> Response:
    """Serialise through the response model (the same one /openapi.json describes)."""
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status,
        media_type="application/json",
    )


async def create_integration(request: Request) -> Response:
    """Create an integration (verifying the Freshchat key unless `verify` is false)."""
    integrations = admin_of(request)
    body = parse_json(await request.body(), IntegrationIn)
    new = NewIntegration.model_validate(body.model_dump(exclude={"verify"}))
    created = await integrations.create(new, verify_api_key if body.verify else None)
    return json_response(created.public(), 201)


async def _with_activity(
    request: Request, integrations: Integrations, listed: list[Integration]
) -> list[IntegrationOut]:
    rq = request.app.state.rq_redis  # the workers' heartbeats are RQ's
    states = await read_states(
        integrations.redis, integrations.redis_keys, integrations.settings, listed, rq
    )
    return [i.public().model_copy(update=states[i.id].api_fields()) for i in listed]


async def list_integrations(request: Request) -> Response:
    """All integrations with their activity (last event, auth failures, stale), no secrets."""
    integrations = admin_of(request)
    listed = await _with_activity(request, integrations, await integrations.all())
    return json_response(IntegrationList(integrations=listed))


async def integration(request: Request) -> Response:
    """GET, PATCH or DELETE one integration."""
    integrations = admin_of(request)
    iid = request.path_params["iid"]
    if request.method == "DELETE":
        await integrations.delete(iid)
        return Response(status_code=204)
    if request.method == "PATCH":
        body = parse_json(await request.body(), IntegrationPatch)
        changes = IntegrationChanges.model_validate(body.model_dump(exclude={"verify"}))
        updated = await integrations.update(iid, changes, verify_api_key if body.verify else None)
        return json_response(updated.public())
    [one] = await _with_activity(request, integrations, [await integrations.get(iid)])
    return json_response(one)


async def api_keys(request: Request) -> Response:
    """POST creates a key (shown once); GET lists key metadata."""
    integrations = admin_of(request)
    iid = request.path_params["iid"]
    if request.method == "POST":
        return json_response(ApiKeyCreated.model_validate(await integrations.create_key(iid)), 201)
    listed = await integrations.list_keys(iid)
    return json_response(ApiKeyList.model_validate({"api_keys": listed}))


async def revoke_api_key(request: Request) -> Response:
    """Revoke one key; it stops working at once."""
    integrations = admin_of(request)
    await integrations.revoke_key(request.path_params["iid"], request.path_params["key_id"])
    return Response(status_code=204)


async def contacts(request: Request) -> Response:
    """Counts per interval and queue, JSON or CSV."""
    integrations = reader_of(request)
    iid = request.path_params["iid"]
    integration = await integrations.get(iid)
    params = request.query_params
    query = parse_query(
        params.get("from"),
        params.get("to"),
        params.get("interval"),
        params.get("tz"),
        params.get("queue"),
    )
    snapshot = await read_counts(
        integrations.redis, integrations.redis_keys, integration.shard, iid, query
    )
    # Streamed in pieces, serialised directly: a 31-day read of a big customer is ~10^5
    # rows, and validating them through the response model cost more than reading them.
    wants_csv = params.get("format") == "csv" or "text/csv" in request.headers.get("accept", "")
    if wants_csv:
        headers = {
            "X-Revision": snapshot.revision,
            "X-Applied-Through": snapshot.applied_through,
        }
        return StreamingResponse(
            csv_chunks(snapshot.rows), media_type="text/csv; charset=utf-8", headers=headers
        )
    head = {
        "integration_id": iid,
        "interval_minutes": query.interval,
        "from": query.echo(query.start),
        "to": query.echo(query.end),
        "revision": snapshot.revision,
        "applied_through": snapshot.applied_through,
    }
    return StreamingResponse(json_chunks(head, snapshot.rows), media_type="application/json")


async def changes(request: Request) -> Response:
    """Every 15-minute interval and queue whose count changed after `since`."""
    integrations = reader_of(request)
    iid = request.path_params["iid"]
    integration = await integrations.get(iid)
    since = parse_revision(request.query_params.get("since"))
    days = integrations.settings.changes_retention_days
    found = await read_changes(
        integrations.redis, integrations.redis_keys, integration.shard, iid, since, days
    )
    listed = [{"interval_start": at, "queue": queue} for at, queue in found.changes]
    body = {"integration_id": iid, "since": found.since, "revision": found.revision}
    return json_response(ChangesOut.model_validate({**body, "changes": listed}))


async def queues(request: Request) -> Response:
    """Every source queue seen, with first/last seen and total contacts."""
    integrations = reader_of(request)
    iid = request.path_params["iid"]
    integration = await integrations.get(iid)
    found = await read_queues(integrations.redis, integrations.redis_keys, integration.shard, iid)
    return json_response(Queues.model_validate({"integration_id": iid, "queues": found}))


def _limit(raw: str | None, default: int, most: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequest(f"limit must be a whole number from 1 to {most}")
    return int(raw)


async def deliveries(request: Request) -> Response:
    """The integration's recent ingestion requests, newest first (§7)."""
    integrations = admin_of(request)
    integration = await integrations.get(request.path_params["iid"])
    params = request.query_params
    before = params.get("before")
    if before is not None and not _DELIVERY_ID.fullmatch(before):
        raise BadRequest("before must be a delivery id such as 1764403200000-0")
    found = await read_deliveries(
        integrations.redis,
        integrations.redis_keys,
        integrations.settings,
        integration.shard,
        integration.id,
        conversation=params.get("conversation_id") or None,
        limit=_limit(params.get("limit"), 50, 1000),
        before=before,
    )
    return json_response(DeliveryList.model_validate({"deliveries": found}))


async def chat(request: Request) -> Response:
    """Explain one chat: counted or not, where, when and why (§7)."""
    integrations = admin_of(request)
    integration = await integrations.get(request.path_params["iid"])
    conversation = request.path_params["conversation_id"]
    if not 1 <= len(conversation) <= 256:
        raise BadRequest("conversation id must be 1 to 256 characters")
    found = await explain(
        integrations.redis,
        integrations.redis_keys,
        integrations.settings,
        integration,
        conversation,
    )
    return json_response(ChatExplained.model_validate(found))


ROUTES = [
    Route("/v1/integrations", create_integration, methods=["POST"]),
    Route("/v1/integrations", list_integrations, methods=["GET"]),
    Route("/v1/integrations/{iid}", integration, methods=["GET", "PATCH", "DELETE"]),
    Route("/v1/integrations/{iid}/api-keys", api_keys, methods=["GET", "POST"]),
    Route("/v1/integrations/{iid}/api-keys/{key_id}", revoke_api_key, methods=["DELETE"]),
    Route("/v1/integrations/{iid}/contacts", contacts, methods=["GET"]),
    Route("/v1/integrations/{iid}/queues", queues, methods=["GET"]),
    Route("/v1/integrations/{iid}/changes", changes, methods=["GET"]),
    Route("/v1/integrations/{iid}/deliveries", deliveries, methods=["GET"]),
    Route("/v1/integrations/{iid}/chats/{conversation_id}", chat, methods=["GET"]),
]
