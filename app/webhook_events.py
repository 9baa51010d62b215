"""Freshchat's own webhook bodies (§12) -> the compact event counting uses.

A body is one event: `{"actor", "action", "action_time", "data"}`. Three actions matter:
a resolution (solved at `action_time`, in the conversation's group when it names one), an
assignment (not terminal; the chat's group from then on) and a reopen (not terminal).
Every other action (`message_create`, ...) is acknowledged and ignored. Only the fields
counting uses are modelled; message texts and the rest never reach Redis.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict  # the one pydantic takes on Python 3.11

from app.compact import Compact, Kind, chat_key
from app.errors import BadRequest
from app.event_fields import FastIdText, FastOptionalId, TimestampMs

RESOLUTION = "conversation_resolution"
ASSIGNMENT = "conversation_assignment"
REOPEN = "conversation_reopen"
#: One letter per counted webhook event in a delivery's note (app events use lower case c/u/d).
ACTION_LETTERS = {RESOLUTION: "r", ASSIGNMENT: "a", REOPEN: "o"}
_IGNORE_EXTRA = ConfigDict(extra="ignore")


@with_config(_IGNORE_EXTRA)
class Conversation(TypedDict):
    """The conversation inside an action's data."""

    conversation_id: FastIdText
    assigned_group_id: NotRequired[FastOptionalId]


@with_config(_IGNORE_EXTRA)
class Resolve(TypedDict):
    """`data.resolve`."""

    conversation: Conversation


@with_config(_IGNORE_EXTRA)
class Assign(TypedDict):
    """`data.assignment`."""

    conversation: Conversation
    to_group_id: NotRequired[FastOptionalId]


@with_config(_IGNORE_EXTRA)
class Reopen(TypedDict):
    """`data.reopen`."""

    conversation: Conversation


@with_config(_IGNORE_EXTRA)
class ResolutionData(TypedDict):
    """`data` of a resolution."""

    resolve: Resolve


@with_config(_IGNORE_EXTRA)
class AssignmentData(TypedDict):
    """`data` of an assignment."""

    assignment: Assign


@with_config(_IGNORE_EXTRA)
class ReopenData(TypedDict):
    """`data` of a reopen."""

    reopen: Reopen


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Resolution(_Model):
    """`conversation_resolution`: the chat was solved at `action_time`."""

    action: Literal["conversation_resolution"]
    action_time: TimestampMs
    data: ResolutionData


class Assignment(_Model):
    """`conversation_assignment`: the chat's group from `action_time` on."""

    action: Literal["conversation_assignment"]
    action_time: TimestampMs
    data: AssignmentData


class Reopened(_Model):
    """`conversation_reopen`: not terminal."""

    action: Literal["conversation_reopen"]
    action_time: TimestampMs
    data: ReopenData


def _not_counted(name: str) -> str:
    if name in ACTION_LETTERS:
        raise ValueError("a counted action is not an other action")
    return name


class OtherAction(_Model):
    """Any other action (`message_create`, ...): acknowledged and ignored."""

    action: Annotated[str, Field(max_length=128), AfterValidator(_not_counted)]


WebhookEvent = Resolution | Assignment | Reopened | OtherAction


def _action_of(value: Any) -> str:
    action = value.get("action") if isinstance(value, dict) else getattr(value, "action", None)
    return action if isinstance(action, str) and action in ACTION_LETTERS else "other"


_TAGS = (RESOLUTION, ASSIGNMENT, REOPEN, "other")
_EVENT: TypeAdapter[WebhookEvent] = TypeAdapter(
    Annotated[
        Annotated[Resolution, Tag(RESOLUTION)]
        | Annotated[Assignment, Tag(ASSIGNMENT)]
        | Annotated[Reopened, Tag(REOPEN)]
        | Annotated[OtherAction, Tag("other")],
        Discriminator(_action_of),
    ]
)


class Parsed(NamedTuple):
    """A webhook body: its compact event (None when ignored) and its delivery note."""

    compact: Compact | None
    note: str


def _detail(exc: ValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ["body", *(p for p in err["loc"] if p not in _TAGS)]
        out.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
    return out


def _compact(event: WebhookEvent) -> Compact | None:
    if isinstance(event, Resolution):
        conv = event.data["resolve"]["conversation"]
        gid = conv.get("assigned_group_id") or ""
        kind = Kind.SOLVED if gid else Kind.SOLVED_GROUP_UNNAMED
    elif isinstance(event, Assignment):
        assign = event.data["assignment"]
        conv = assign["conversation"]
        # An assignment to no group (to_group_id null) is remembered too: "no group" since.
        if "to_group_id" in assign:
            gid = assign["to_group_id"] or ""
        else:
            gid = conv.get("assigned_group_id") or ""
        kind = Kind.ASSIGNED
    elif isinstance(event, Reopened):
        conv, gid, kind = event.data["reopen"]["conversation"], "", Kind.OTHER
    else:
        return None
    return Compact(chat_key(conv["conversation_id"]), kind, event.action_time, gid, "")


def parse_webhook(body: bytes, now_ms: int, tolerance_s: int) -> Parsed:
    """Validate one webhook body; BadRequest names the bad field."""
    try:
        event = _EVENT.validate_json(body)
    except ValidationError as exc:
        if exc.errors()[0]["type"] in ("json_invalid", "json_type"):
            detail = [{"loc": ["body"], "msg": "invalid JSON"}]
            raise BadRequest("body is not valid JSON", detail) from None
        raise BadRequest("invalid webhook payload", _detail(exc)) from None
    compact = _compact(event)
    if compact is None:
        return Parsed(None, "w1:")
    if not 0 < compact.time_ms <= now_ms + tolerance_s * 1000:
        raise BadRequest(
            f"action_time is more than {tolerance_s // 3600} h in the future or out of range",
            [{"loc": ["body", "action_time"], "msg": "time out of range"}],
        )
    return Parsed(compact, "w0:" + ACTION_LETTERS[event.action])
