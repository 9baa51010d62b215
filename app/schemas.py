"""Response bodies of the public API, as pydantic models (they also drive /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Accepted(BaseModel):
    """202 from the events endpoint."""

    accepted: int = Field(ge=0)
    ignored: int = Field(ge=0)


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str
    reason: str
    detail: list[dict[str, object]] | None = None


class IntegrationOut(BaseModel):
    """An integration, without secrets, with its activity when listed or fetched."""

    id: str
    name: str
    freshchat_domain: str
    created_at: int
    status: str
    last_event_at: int | None = None
    auth_failures: int | None = None
    stale: bool | None = None
    state: str | None = None
    state_reason: str | None = None
    state_fix: str | None = None
    pending_events: int | None = None
    app_installed_at: int | None = None


class IntegrationList(BaseModel):
    """`GET /v1/integrations`."""

    integrations: list[IntegrationOut]


class ApiKeyCreated(BaseModel):
    """The one time an injixo API key is shown."""

    key_id: str
    api_key: str
    prefix: str


class ApiKeyMeta(BaseModel):
    """A key as listed: never the secret."""

    key_id: str
    prefix: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None


class ApiKeyList(BaseModel):
    """`GET /v1/integrations/{id}/api-keys`."""

    api_keys: list[ApiKeyMeta]


class ContactRow(BaseModel):
    """Contacts of one queue in one interval."""

    interval_start: str
    queue: str
    contacts: int = Field(gt=0)


class Contacts(BaseModel):
    """`GET /v1/integrations/{id}/contacts` (JSON; served streamed, in this shape)."""

    integration_id: str
    interval_minutes: int
    from_: str = Field(alias="from")
    to: str
    revision: str = Field(description="grows with every change; taken with the rows")
    applied_through: str = Field(description="every event stored before it is counted")
    rows: list[ContactRow]


class Change(BaseModel):
    """A 15-minute UTC interval and queue whose count changed."""

    interval_start: str
    queue: str


class ChangesOut(BaseModel):
    """`GET /v1/integrations/{id}/changes?since=REVISION`."""

    integration_id: str
    since: str
    revision: str
    changes: list[Change]


class QueueSeen(BaseModel):
    """One source queue and its totals."""

    queue: str
    first_seen: str
    last_seen: str
    contacts: int


class Queues(BaseModel):
    """`GET /v1/integrations/{id}/queues`."""

    integration_id: str
    queues: list[QueueSeen]


class DeliveredEvent(BaseModel):
    """One counted event of a delivery, as counting saw it."""

    event: str
    conversation_id: str
    kind: str  # solved | deleted | assigned | other
    time: str
    group_id: str | None
    group_name: str | None
    path: Literal["app", "webhook"]


class Delivery(BaseModel):
    """One ingestion request of an integration (§7 deliveries log)."""

    id: str
    path: Literal["app", "webhook"]  # the injixo app, or Freshchat's own webhook (§12)
    received_at: str
    status: int
    reason: str | None
    accepted: int
    ignored: int
    events: list[DeliveredEvent]


class DeliveryList(BaseModel):
    """`GET /v1/integrations/{id}/deliveries`, newest first."""

    deliveries: list[Delivery]


class Why(BaseModel):
    """How a chat's queue was decided (or why it is not counted), as a code and in words."""

    code: str
    text: str


class Assignment(BaseModel):
    """A chat's latest group seen on the webhook path (or from Freshchat's lookup)."""

    group_id: str | None
    at: str | None
    source: Literal["webhook_assignment", "freshchat_conversation_lookup"]


class ChatExplained(BaseModel):
    """`GET /v1/integrations/{id}/chats/{conversation_id}`."""

    conversation_id: str
    counted: bool
    kind: str | None
    time: str | None
    interval_start: str | None
    queue: str | None
    why: Why
    assignment: Assignment | None = None
    deliveries: list[Delivery]
