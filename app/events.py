"""Freshworks product-event payloads -> compact events the workers apply.

Only the fields §3/§4 need are modelled; everything else (including `iparams`) is
ignored by the models and so never reaches Redis.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)

from app.errors import BadRequest

CONVERSATION_EVENTS = frozenset(
    {"onConversationCreate", "onConversationUpdate", "onConversationDelete"}
)
TERMINAL_DELETED_STATUSES = frozenset({"deleted", "spam"})
DELETED_FLAGS = ("deleted", "is_deleted", "spam", "is_spam")
MS_THRESHOLD = 100_000_000_000  # numbers above this are milliseconds (1e11 s is year 5138)


class Kind(IntEnum):
    """What an event means for counting."""

    OTHER = 0
    SOLVED = 1
    DELETED = 2


def _id_text(value: Any) -> Any:
    """Accept numeric ids as text; Freshworks uses both."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


IdText = Annotated[str, BeforeValidator(_id_text), Field(min_length=1, max_length=256)]
OptionalId = Annotated[Annotated[str, Field(max_length=256)] | None, BeforeValidator(_id_text)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Conversation(_Model):
    """The fields of `data.conversation` that counting uses."""

    conversation_id: IdText
    status: str | None = Field(default=None, max_length=64)
    assigned_group_id: OptionalId = None
    resolved_time: datetime | None = None
    deleted: bool | None = None
    is_deleted: bool | None = None
    spam: bool | None = None
    is_spam: bool | None = None


class Group(_Model):
    """`data.associations.group`."""

    id: OptionalId = None
    name: str | None = Field(default=None, max_length=255)


class Associations(_Model):
    """`data.associations`."""

    group: Group | None = None


class Changes(_Model):
    """`data.changes`."""

    model_changes: dict[str, Any] | None = None


class ConversationData(_Model):
    """`data` of a conversation event."""

    conversation: Conversation
    associations: Associations | None = None
    changes: Changes | None = None


def _timestamp_ms(value: Any) -> int:
    """Seconds (maybe fractional), milliseconds, or ISO 8601 -> epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be a number or an ISO 8601 string")
    if isinstance(value, str):
        text = value.strip()
        try:
            number: float | None = float(text)
        except ValueError:
            number = None
        if number is None:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError("timestamp is not a number or an ISO 8601 time") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                return _in_range(parsed.timestamp() * 1000)
            except (OverflowError, ValueError):
                raise ValueError("timestamp is out of range") from None
        value = number
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("timestamp must be finite")
        return _in_range(value if abs(value) >= MS_THRESHOLD else value * 1000)
    raise ValueError("timestamp must be a number or an ISO 8601 string")


def _in_range(ms: float) -> int:
    """Epoch milliseconds after 1970 and below 2^43 (year 2248), rounded."""
    if ms <= 0 or ms >= 2**43:
        raise ValueError("timestamp is out of range")
    return round(ms)


TimestampMs = Annotated[int, BeforeValidator(_timestamp_ms)]


class ConversationEvent(_Model):
    """A conversation event the product counts."""

    event: str
    timestamp: TimestampMs
    data: ConversationData


class OtherEvent(_Model):
    """Any other product event: acknowledged and ignored."""

    event: str


_TAGS = ("conversation-event", "other-event")


def _kind_of(value: Any) -> str:
    name = value.get("event") if isinstance(value, dict) else getattr(value, "event", None)
    known = isinstance(name, str) and name in CONVERSATION_EVENTS  # `name` may be any JSON
    return _TAGS[0] if known else _TAGS[1]


AnyEvent = Annotated[
    Annotated[ConversationEvent, Tag(_TAGS[0])] | Annotated[OtherEvent, Tag(_TAGS[1])],
    Discriminator(_kind_of),
]
_single = TypeAdapter(AnyEvent)
_batch = TypeAdapter(list[AnyEvent])


@dataclass(frozen=True, slots=True)
class Compact:
    """What one counted event becomes: small, with no payload left in it (a plain
    dataclass: it is built from already-validated fields on the hot path)."""

    chat: str
    kind: Kind
    time_ms: int
    group_id: str
    group_name: str

    def encode(self, integration_id: str) -> bytes:
        """Stream-entry encoding the apply script decodes (a JSON array)."""
        return orjson.dumps(
            [
                integration_id,
                self.chat,
                int(self.kind),
                self.time_ms,
                self.group_id,
                self.group_name,
            ]
        )


def chat_key(conversation_id: str) -> str:
    """Short, stable key part for a chat: base64url of a UUID, else `~` + the raw id."""
    try:
        as_uuid = uuid.UUID(conversation_id)
    except ValueError:
        return "~" + conversation_id
    if str(as_uuid) != conversation_id.lower():
        return (
            "~" + conversation_id
        )  # non-canonical spellings stay distinct, as Freshchat sent them
    return base64.urlsafe_b64encode(as_uuid.bytes).decode()[:22]


def _flag_true(value: Any) -> bool:
    """A true flag, or a `[old, new]` model change whose new value is true."""
    if isinstance(value, list) and value:
        value = value[-1]
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _new_status(changes: Changes | None) -> str | None:
    if changes is None or not changes.model_changes:
        return None
    status = changes.model_changes.get("status")
    if isinstance(status, list) and status and isinstance(status[-1], str):
        return status[-1]
    return None


def _epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds; 0 (rejected as out of range) if not representable (year 1, -14:00)."""
    try:
        return round(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        return 0


def compact(event: ConversationEvent) -> Compact:
    """Reduce a conversation event to what §4 needs."""
    conv = event.data.conversation
    statuses = {s.strip().lower() for s in (conv.status, _new_status(event.data.changes)) if s}
    flags = [getattr(conv, f) for f in DELETED_FLAGS]
    changes = (event.data.changes.model_changes if event.data.changes else None) or {}
    flags += [changes.get(f) for f in DELETED_FLAGS]
    if (
        event.event == "onConversationDelete"
        or statuses & TERMINAL_DELETED_STATUSES
        or any(_flag_true(f) for f in flags)
    ):
        kind, time_ms = Kind.DELETED, event.timestamp
    elif conv.status is not None and conv.status.strip().lower() == "resolved":
        kind = Kind.SOLVED
        time_ms = _epoch_ms(conv.resolved_time) if conv.resolved_time else event.timestamp
    else:
        kind, time_ms = Kind.OTHER, event.timestamp
    group = event.data.associations.group if event.data.associations else None
    group_id = conv.assigned_group_id or (group.id if group else None) or ""
    # NUL never occurs in a Freshchat name, and a leading one marks a negative cache entry.
    group_name = (group.name or "").replace("\x00", "") if group else ""
    if group and group.id and conv.assigned_group_id and group.id != conv.assigned_group_id:
        group_name = ""  # the association describes another group than the one assigned
    return Compact(
        chat=chat_key(conv.conversation_id),
        kind=kind,
        time_ms=time_ms,
        group_id=group_id,
        group_name=group_name,
    )


def _error_detail(exc: ValidationError, batch: bool) -> list[dict[str, Any]]:
    detail = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        # Drop the discriminator tag pydantic inserts into the location.
        loc = [p for p in err["loc"] if p not in _TAGS]
        if not batch:
            loc = ["body", *loc]
        detail.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
    return detail


def parse_body(body: bytes, max_events: int) -> list[ConversationEvent | OtherEvent]:
    """Parse one payload or an array of payloads; BadRequest names the bad field."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("body is not valid JSON", [{"loc": ["body"], "msg": str(exc)}]) from None
    if isinstance(raw, list):
        if not raw:
            raise BadRequest("empty batch", [{"loc": ["body"], "msg": "array has no events"}])
        if len(raw) > max_events:
            raise BadRequest(
                f"too many events in one batch (at most {max_events})",
                [{"loc": ["body"], "msg": f"{len(raw)} events"}],
            )
        try:
            return _batch.validate_python(raw)
        except ValidationError as exc:
            raise BadRequest("invalid event payload", _error_detail(exc, batch=True)) from None
    if not isinstance(raw, dict):
        raise BadRequest(
            "body must be a JSON object or an array of objects",
            [{"loc": ["body"], "msg": f"got {type(raw).__name__}"}],
        )
    try:
        return [_single.validate_python(raw)]
    except ValidationError as exc:
        raise BadRequest("invalid event payload", _error_detail(exc, batch=False)) from None


def to_compacts(
    events: list[ConversationEvent | OtherEvent], now_ms: int, tolerance_s: int
) -> tuple[list[Compact], int]:
    """Compact the conversation events; count the rest as ignored; 400 on a bad time."""
    limit = now_ms + tolerance_s * 1000
    out: list[Compact] = []
    for index, event in enumerate(events):
        if not isinstance(event, ConversationEvent):
            continue
        c = compact(event)
        if event.timestamp > limit or not 0 < c.time_ms <= limit:
            field = "timestamp" if event.timestamp > limit else "data.conversation.resolved_time"
            raise BadRequest(
                f"event time is more than {tolerance_s // 3600} h in the future or out of range",
                [{"loc": [index, *field.split(".")], "msg": "time out of range"}],
            )
        out.append(c)
    return out, len(events) - len(out)
