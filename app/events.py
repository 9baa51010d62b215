"""Freshworks product-event payloads -> compact events the workers apply.

Only the fields §3/§4 need are modelled; everything else (including `iparams`) is ignored
and so never reaches Redis. A body is validated straight from its bytes into the event
models (their payload parts are plain dicts: few objects per event); a body that fails
there is read again with orjson and twins of the models (`_explainers`), which name the
bad field exactly as the endpoint always has, so every body gets the answer it got when
orjson read them all, bar one: a number beyond a double's range (1e400) in a field the
product ignores is ignored now (it is JSON; orjson refused the whole body).
"""

from __future__ import annotations

import gc
import re
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, cast

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict  # the one pydantic takes on Python 3.11

from app.compact import Compact, Kind, chat_key, epoch_ms
from app.errors import BadRequest
from app.event_fields import (
    IN_TURN,
    FastIdText,
    FastOptionalId,
    FastTimestampMs,
    GroupName,
    IdText,
    OptionalId,
    Status,
    TimestampMs,
)

CONVERSATION_EVENTS = frozenset(
    {"onConversationCreate", "onConversationUpdate", "onConversationDelete"}
)
TERMINAL_DELETED_STATUSES = frozenset({"deleted", "spam"})
DELETED_FLAGS = ("deleted", "is_deleted", "spam", "is_spam")


ConversationName = Literal["onConversationCreate", "onConversationUpdate", "onConversationDelete"]


def _not_counted(name: str) -> str:
    if name in CONVERSATION_EVENTS:  # (only the fast path's union ever gets here with one)
        raise ValueError("a conversation event is not an other event")
    return name


OtherName = Annotated[str, AfterValidator(_not_counted)]
_IGNORE_EXTRA = ConfigDict(extra="ignore")


@with_config(_IGNORE_EXTRA)
class Conversation(TypedDict):
    """The fields of `data.conversation` that counting uses."""

    conversation_id: FastIdText
    status: NotRequired[Status]
    assigned_group_id: NotRequired[FastOptionalId]
    resolved_time: NotRequired[datetime | None]
    deleted: NotRequired[bool | None]
    is_deleted: NotRequired[bool | None]
    spam: NotRequired[bool | None]
    is_spam: NotRequired[bool | None]


@with_config(_IGNORE_EXTRA)
class Group(TypedDict, total=False):
    """`data.associations.group`."""

    id: FastOptionalId
    name: GroupName


@with_config(_IGNORE_EXTRA)
class Associations(TypedDict, total=False):
    """`data.associations`."""

    group: Group | None


@with_config(_IGNORE_EXTRA)
class Changes(TypedDict, total=False):
    """`data.changes`."""

    model_changes: dict[str, Any] | None


@with_config(_IGNORE_EXTRA)
class ConversationData(TypedDict):
    """`data` of a conversation event."""

    conversation: Conversation
    associations: NotRequired[Associations | None]
    changes: NotRequired[Changes | None]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ConversationEvent(_Model):
    """A conversation event the product counts."""

    event: ConversationName
    timestamp: FastTimestampMs
    data: ConversationData


class OtherEvent(_Model):
    """Any other product event: acknowledged and ignored."""

    event: OtherName


# The two event models tried in turn: no Python call per event to choose between them.
_EITHER = Annotated[ConversationEvent | OtherEvent, IN_TURN]
_ONE = TypeAdapter(_EITHER)
_MANY = TypeAdapter(list[_EITHER])
_START = re.compile(rb"[ \t\n\r]*([\[{])")  # JSON whitespace, then an array or an object
_TAGS = ("conversation-event", "other-event")


def _kind_of(value: Any) -> str:
    name = value.get("event") if isinstance(value, dict) else getattr(value, "event", None)
    known = isinstance(name, str) and name in CONVERSATION_EVENTS  # `name` may be any JSON
    return _TAGS[0] if known else _TAGS[1]


def _explainers() -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
    """The payload as models of the same names: they name a bad field as always."""
    # A union tagged by a Python callable, models named as the errors name them
    # ("Input should be a valid dictionary or instance of Conversation").

    class Conversation(_Model):
        conversation_id: IdText
        status: Status = None
        assigned_group_id: OptionalId = None
        resolved_time: datetime | None = None
        deleted: bool | None = None
        is_deleted: bool | None = None
        spam: bool | None = None
        is_spam: bool | None = None

    class Group(_Model):
        id: OptionalId = None
        name: GroupName = None

    class Associations(_Model):
        group: Group | None = None

    class Changes(_Model):
        model_changes: dict[str, Any] | None = None

    class ConversationData(_Model):
        conversation: Conversation
        associations: Associations | None = None
        changes: Changes | None = None

    class ConversationEvent(_Model):
        event: ConversationName
        timestamp: TimestampMs
        data: ConversationData

    class OtherEvent(_Model):
        event: OtherName

    tagged = Annotated[
        Annotated[ConversationEvent, Tag(_TAGS[0])] | Annotated[OtherEvent, Tag(_TAGS[1])],
        Discriminator(_kind_of),
    ]
    return TypeAdapter(tagged), TypeAdapter(list[tagged])


_EXPLAIN_ONE, _EXPLAIN_MANY = _explainers()


def _flag_true(value: Any) -> bool:
    """A true flag, or a `[old, new]` model change whose new value is true."""
    if isinstance(value, list) and value:
        value = value[-1]
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _deleted_by_change(model_changes: dict[str, Any]) -> bool:
    """A status change to deleted or spam, or a deleted/spam flag changed to true."""
    change = model_changes.get("status")
    new = change[-1] if isinstance(change, list) and change else None
    if isinstance(new, str) and new.strip().lower() in TERMINAL_DELETED_STATUSES:
        return True
    if len(model_changes) == (change is not None):
        return False  # nothing but the status changed (the usual)
    return any(_flag_true(model_changes.get(flag)) for flag in DELETED_FLAGS)


def compact(event: ConversationEvent) -> Compact:
    """Reduce a conversation event to what §4 needs."""
    data = event.data
    conv = data["conversation"]
    status = conv.get("status")
    status = status.strip().lower() if status else None
    changes = data.get("changes")
    model_changes = changes.get("model_changes") if changes else None
    if (
        event.event == "onConversationDelete"
        or status in TERMINAL_DELETED_STATUSES
        or conv.get("deleted")  # each flag is True, False or None
        or conv.get("is_deleted")
        or conv.get("spam")
        or conv.get("is_spam")
        or (model_changes and _deleted_by_change(model_changes))
    ):
        kind, time_ms = Kind.DELETED, event.timestamp
    elif status == "resolved":
        kind, resolved = Kind.SOLVED, conv.get("resolved_time")
        time_ms = epoch_ms(resolved) if resolved is not None else event.timestamp
    else:
        kind, time_ms = Kind.OTHER, event.timestamp
    assigned = conv.get("assigned_group_id")
    associations = data.get("associations")
    group = associations.get("group") if associations else None
    if group is None:
        group_id, group_name = assigned or "", ""
    else:
        gid = group.get("id")
        group_id = assigned or gid or ""
        if gid and assigned and gid != assigned:
            group_name = ""  # the association describes another group than the one assigned
        else:
            # NUL never occurs in a Freshchat name; a leading one marks a negative cache entry.
            group_name = (group.get("name") or "").replace("\x00", "")
    return Compact(chat_key(conv["conversation_id"]), kind, time_ms, group_id, group_name)


def _plain_numbers(body: bytes) -> bool:
    """No NaN or Infinity anywhere: validating from bytes reads them, orjson refuses them."""
    # Each word's capital letter is rare in payloads: its places are found with a fast
    # byte search and checked one by one, up to a limit; then the word itself is searched.
    limit = 16 + len(body) // 256
    for word in (b"NaN", b"Infinity"):
        at = body.find(word[:1])
        for _ in range(limit):
            if at < 0:
                break
            if body.startswith(word, at):
                return False
            at = body.find(word[:1], at + 1)
        else:
            if body.find(word, at) >= 0:
                return False
    return True


class Events(list[ConversationEvent | OtherEvent]):
    """A body's events, with what each counted one becomes (None for the others)."""

    __slots__ = ("compacts",)
    compacts: list[Compact | None]


def _counted(events: list[ConversationEvent | OtherEvent]) -> Events:
    out = Events(events)
    # (The validators make exactly these two classes: `type` is quicker than isinstance.)
    out.compacts = [compact(e) if type(e) is ConversationEvent else None for e in events]
    return out


def _fast(body: bytes, batch: bool, max_events: int) -> Events | None:
    """The body validated straight from its bytes, or None: then the slow way decides."""
    try:
        events = _MANY.validate_json(body) if batch else [_ONE.validate_json(body)]
    except ValidationError:
        return None
    if 0 < len(events) <= max_events and _plain_numbers(body):
        return _counted(events)
    return None


def parse_body(body: bytes, max_events: int) -> Events:
    """Parse one payload or an array of payloads; BadRequest names the bad field."""
    # No garbage collection meanwhile: a 500-event body is thousands of new containers,
    # all alive until it is reduced, and every collection would walk them again.
    start = _START.match(body)
    if start is not None:
        collecting = gc.isenabled()
        gc.disable()
        try:
            events = _fast(body, start.group(1) == b"[", max_events)
        finally:
            if collecting:
                gc.enable()
        if events is not None:
            return events
    return _counted(_parse_slowly(body, max_events))


def _error_detail(exc: ValidationError, batch: bool) -> list[dict[str, Any]]:
    detail = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        # Drop the discriminator tag pydantic inserts into the location.
        loc = [p for p in err["loc"] if p not in _TAGS]
        if not batch:
            loc = ["body", *loc]
        detail.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
    return detail


def _parse_slowly(body: bytes, max_events: int) -> list[ConversationEvent | OtherEvent]:
    """orjson and the explaining models: the answer the endpoint has always given."""
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
            _EXPLAIN_MANY.validate_python(raw)
        except ValidationError as exc:
            raise BadRequest("invalid event payload", _error_detail(exc, batch=True)) from None
        return _MANY.validate_python(raw)  # valid, as the explaining models just said
    if not isinstance(raw, dict):
        raise BadRequest(
            "body must be a JSON object or an array of objects",
            [{"loc": ["body"], "msg": f"got {type(raw).__name__}"}],
        )
    try:
        _EXPLAIN_ONE.validate_python(raw)
    except ValidationError as exc:
        raise BadRequest("invalid event payload", _error_detail(exc, batch=False)) from None
    return [_ONE.validate_python(raw)]


def to_compacts(
    events: list[ConversationEvent | OtherEvent], now_ms: int, tolerance_s: int
) -> tuple[list[Compact], int]:
    """Compact the conversation events; count the rest as ignored; 400 on a bad time."""
    counted = events if isinstance(events, Events) else _counted(events)
    limit = now_ms + tolerance_s * 1000
    out: list[Compact] = []
    for index, (event, c) in enumerate(zip(counted, counted.compacts, strict=True)):
        if c is None:
            continue
        sent = cast(ConversationEvent, event).timestamp
        if sent > limit or not 0 < c.time_ms <= limit:
            field = "timestamp" if sent > limit else "data.conversation.resolved_time"
            raise BadRequest(
                f"event time is more than {tolerance_s // 3600} h in the future or out of range",
                [{"loc": [index, *field.split(".")], "msg": "time out of range"}],
            )
        out.append(c)
    return out, len(counted) - len(out)
