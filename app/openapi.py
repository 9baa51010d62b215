"""`GET /openapi.json`: every public endpoint, with schemas from the models the code uses."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from app.api import IntegrationIn, IntegrationPatch
from app.backfill_schemas import BackfillIn, BackfillList, BackfillOut
from app.events import ConversationEvent, OtherEvent
from app.intervals import INTERVALS
from app.schemas import (
    Accepted,
    ApiKeyCreated,
    ApiKeyList,
    ChangesOut,
    ChatExplained,
    Contacts,
    DeliveryList,
    ErrorBody,
    IntegrationList,
    IntegrationOut,
    Queues,
)
from app.settings import Settings
from app.webhook_events import Assignment, OtherAction, Reopened, Resolution
from app.webhooks import WebhookIn, WebhookOut

REF = "#/components/schemas/{model}"
MODELS: list[type[BaseModel]] = [
    Accepted, ApiKeyCreated, ApiKeyList, ChangesOut, Contacts, ErrorBody, IntegrationIn,
    IntegrationList, IntegrationOut, IntegrationPatch, Queues, ConversationEvent, OtherEvent,
    DeliveryList, ChatExplained, WebhookIn, WebhookOut, Resolution, Assignment, Reopened,
    OtherAction, BackfillIn, BackfillOut, BackfillList,
]  # fmt: skip
ERRORS = {
    "400": "invalid input (names the field)",
    "401": "missing or invalid credentials",
    "404": "no such integration, key, webhook or backfill",
    "409": "conflict (duplicate name, deleted integration, a backfill already running)",
    "410": "no longer kept (changes older than CHANGES_RETENTION_DAYS: re-read the range)",
    "413": "body over the limit",
    "415": "not JSON",
    "429": "rate limit exceeded (Retry-After)",
    "502": "Freshchat could not be reached",
    "503": "storage unavailable (Retry-After)",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(
    summary: str,
    ok: tuple[str, dict[str, Any] | None],
    errors: tuple[str, ...],
    security: str,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    status, schema = ok
    responses: dict[str, Any] = {
        status: {"description": "success", **({"content": _json(schema)} if schema else {})}
    }
    for code in errors:
        responses[code] = {"description": ERRORS[code], "content": _json(_ref(ErrorBody))}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if security:
        op["security"] = [{security: []}]
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


@cache
def build(max_events: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document (`max_events`: the MAX_BATCH_EVENTS in force)."""
    components = {}
    for model in MODELS:
        schema = TypeAdapter(model).json_schema(ref_template=REF, by_alias=True)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    event = {"oneOf": [_ref(ConversationEvent), _ref(OtherEvent)]}
    iid = _path_param("iid")
    contacts_params = [
        iid,
        _query("from", {"type": "string", "format": "date-time"}, True),
        _query("to", {"type": "string", "format": "date-time"}, True),
        _query("interval", {"type": "integer", "enum": list(INTERVALS)}),
        _query("tz", {"type": "string"}),
        _query("queue", {"type": "string"}),
        _query("format", {"type": "string", "enum": ["json", "csv"]}),
    ]
    paths = {
        "/v1/freshchat/events": {
            "post": _op(
                f"Store Freshworks product events (one payload or an array of up to {max_events})",
                ("202", _ref(Accepted)),
                ("400", "401", "413", "415", "429", "503"),
                "apiKey",
                body={
                    "oneOf": [
                        event,
                        {
                            "type": "array",
                            "items": event,
                            "minItems": 1,
                            "maxItems": max_events,
                        },
                    ]
                },
            )
        },
        "/v1/freshchat/webhooks/{webhook_id}": {
            "post": _op(
                "Store one of Freshchat's own webhook events (signed with the account's RSA key)",
                ("202", _ref(Accepted)),
                ("400", "401", "404", "413", "415", "429", "503"),
                "freshchatSignature",
                body={"oneOf": [_ref(m) for m in (Resolution, Assignment, Reopened, OtherAction)]},
                params=[_path_param("webhook_id")],
            )
        },
        "/v1/integrations/{iid}/webhook": {
            "get": _op(
                "The integration's Freshchat webhook (URL and public key)",
                ("200", _ref(WebhookOut)),
                ("401", "404"),
                "admin",
                params=[iid],
            ),
            "put": _op(
                "Paste Freshchat's webhook public key; answers the URL to paste into Freshchat",
                ("200", _ref(WebhookOut)),
                ("400", "401", "404", "409"),
                "admin",
                body=_ref(WebhookIn),
                params=[iid],
            ),
            "delete": _op(
                "Stop accepting the integration's Freshchat webhook (its URL answers 404)",
                ("204", None),
                ("401", "404"),
                "admin",
                params=[iid],
            ),
        },
        "/v1/integrations/{iid}/backfills": {
            "get": _op(
                "The integration's backfills (history imports), newest first",
                ("200", _ref(BackfillList)),
                ("401", "404"),
                "admin",
                params=[iid],
            ),
            "post": _op(
                "Import past solved chats from Freshchat's Extract API (UTC days, inclusive; "
                "one queued or running per integration)",
                ("202", _ref(BackfillOut)),
                ("400", "401", "404", "409"),
                "admin",
                body=_ref(BackfillIn),
                params=[iid],
            ),
        },
        "/v1/integrations/{iid}/backfills/{bid}": {
            "get": _op(
                "One backfill and its progress",
                ("200", _ref(BackfillOut)),
                ("401", "404"),
                "admin",
                params=[iid, _path_param("bid")],
            ),
            "delete": _op(
                "Cancel a queued or running backfill (it ends cancelled at its next step)",
                ("202", _ref(BackfillOut)),
                ("401", "404", "409"),
                "admin",
                params=[iid, _path_param("bid")],
            ),
        },
        "/v1/integrations": {
            "get": _op("List integrations", ("200", _ref(IntegrationList)), ("401",), "admin"),
            "post": _op(
                "Create an integration",
                ("201", _ref(IntegrationOut)),
                ("400", "401", "409", "502"),
                "admin",
                body=_ref(IntegrationIn),
            ),
        },
        "/v1/integrations/{iid}": {
            "get": _op(
                "One integration",
                ("200", _ref(IntegrationOut)),
                ("401", "404"),
                "admin",
                params=[iid],
            ),
            "patch": _op(
                "Change name, domain or Freshchat key",
                ("200", _ref(IntegrationOut)),
                ("400", "401", "404", "409", "502"),
                "admin",
                body=_ref(IntegrationPatch),
                params=[iid],
            ),
            "delete": _op(
                "Delete (revokes keys; counts stay)",
                ("204", None),
                ("401", "404"),
                "admin",
                params=[iid],
            ),
        },
        "/v1/integrations/{iid}/api-keys": {
            "get": _op(
                "List keys", ("200", _ref(ApiKeyList)), ("401", "404"), "admin", params=[iid]
            ),
            "post": _op(
                "Generate a key",
                ("201", _ref(ApiKeyCreated)),
                ("401", "404", "409"),
                "admin",
                params=[iid],
            ),
        },
        "/v1/integrations/{iid}/api-keys/{key_id}": {
            "delete": _op(
                "Revoke a key",
                ("204", None),
                ("401", "404"),
                "admin",
                params=[iid, _path_param("key_id")],
            ),
        },
        "/v1/integrations/{iid}/contacts": {
            "get": _op(
                "Contacts per interval and source queue (JSON, or CSV with format=csv)",
                ("200", _ref(Contacts)),
                ("400", "401", "404"),
                "reader",
                params=contacts_params,
            )
        },
        "/v1/integrations/{iid}/changes": {
            "get": _op(
                "The 15-minute intervals and queues whose counts changed after a revision",
                ("200", _ref(ChangesOut)),
                ("400", "401", "404", "410"),
                "reader",
                params=[iid, _query("since", {"type": "string", "pattern": "^[0-9]+$"}, True)],
            )
        },
        "/v1/integrations/{iid}/queues": {
            "get": _op(
                "Source queues seen", ("200", _ref(Queues)), ("401", "404"), "reader", params=[iid]
            )
        },
        "/v1/integrations/{iid}/deliveries": {
            "get": _op(
                "The integration's recent ingestion requests, newest first (kept: the last "
                "DELIVERIES_KEPT, at most DELIVERIES_DAYS)",
                ("200", _ref(DeliveryList)),
                ("400", "401", "404"),
                "admin",
                params=[
                    iid,
                    _query("conversation_id", {"type": "string", "maxLength": 256}, False),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False),
                    _query("before", {"type": "string", "pattern": "^[0-9]+-[0-9]+$"}, False),
                ],
            )
        },
        "/v1/integrations/{iid}/chats/{conversation_id}": {
            "get": _op(
                "Explain a chat: counted or not, where, when and why, with its deliveries",
                ("200", _ref(ChatExplained)),
                ("400", "401", "404"),
                "admin",
                params=[
                    iid,
                    {
                        "name": "conversation_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "maxLength": 256},
                    },
                ],
            )
        },
        "/healthz": {"get": _op("Process alive", ("200", None), (), "")},
        "/readyz": {"get": _op("Redis reachable", ("200", None), ("503",), "")},
        "/metrics": {"get": _op("Prometheus metrics", ("200", None), (), "")},
    }
    contacts_ok = paths["/v1/integrations/{iid}/contacts"]["get"]["responses"]["200"]
    contacts_ok["content"]["text/csv"] = {"schema": {"type": "string"}}  # format=csv / Accept
    contacts_ok["headers"] = {
        name: {"description": what, "schema": {"type": "string"}}
        for name, what in (
            ("X-Revision", "the revision of the rows (CSV answers)"),
            ("X-Applied-Through", "every event stored before it is counted (CSV answers)"),
        )
    }
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "injixo-freshchat", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": bearer,
                "admin": bearer,
                "reader": bearer,
                "freshchatSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Freshchat-Signature",
                    "description": "base64 RSA PKCS#1 v1.5 signature of SHA-256 of the raw body",
                },
            },
        },
    }


async def openapi(request: Request) -> Response:
    """Serve the document for this process's settings."""
    settings: Settings = request.app.state.settings
    return Response(orjson.dumps(build(settings.max_batch_events)), media_type="application/json")
