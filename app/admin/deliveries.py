"""What the injixo app sent (§7): the deliveries log with a search by conversation id and
paging, and the explanation of one chat (counted or not, where, when and why).

Plain GET pages reached from the integration page. They carry its day, interval and zone
(`carried`), so times are shown in the zone the customer chose, and the way back keeps it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.admin.chart import interval_label
from app.admin.contacts import carried
from app.admin.page import (
    Page,
    page_with_integration,
    sentence,
)
from app.deliveries import read_deliveries
from app.errors import BadRequest, NotFound
from app.explain import explain
from app.integration import Integration
from app.intervals import zone_of

PAGE_SIZE = 25  # deliveries per page of the log
RECENT = 5  # deliveries the integration page shows
MAX_ID_CHARS = 256  # a conversation id, as ingestion accepts it
DELIVERY_ID = re.compile(r"\d{1,15}-\d{1,10}")
REASON_CODE = re.compile(r"([a-z_]+): (.+)", re.DOTALL)

ANSWERS = {
    202: "Accepted",
    400: "Rejected: not a valid request",
    401: "Refused: wrong or revoked injixo API key",
    404: "Refused: the webhook was deleted or given a new URL",
    413: "Rejected: too large",
    415: "Rejected: not JSON",
    429: "Refused: too many events at once (the app sends them again)",
    503: "Not stored: the service was unavailable (the app sends them again)",
}
EVENTS = {
    "onConversationCreate": "Conversation created",
    "onConversationUpdate": "Conversation updated",
    "onConversationDelete": "Conversation deleted",
    "conversation_resolution": "Conversation resolved",
    "conversation_assignment": "Conversation assigned",
    "conversation_reopen": "Conversation reopened",
}
PATHS = {"app": "injixo app", "webhook": "Freshchat webhook"}
WEBHOOK_ANSWERS = {401: "Refused: missing or wrong signature (check the public key pasted here)"}
KINDS = {
    "solved": "Solved",
    "deleted": "Deleted or spam",
    "assigned": "Assigned",
    "other": "Other change",
}


# --- what every page here needs ------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """The integration these pages are about and how the customer wants times shown."""

    page: Page
    record: Integration
    zone: ZoneInfo | None  # None: UTC
    carry: str  # the integration page's day, interval and zone, as a query string

    @property
    def zone_name(self) -> str:
        """The zone the times are written in."""
        return self.zone.key if self.zone is not None else "UTC"

    @property
    def carry_fields(self) -> list[tuple[str, str]]:
        """The carried view as hidden fields of a GET form."""
        return parse_qsl(self.carry)

    @property
    def base(self) -> str:
        """The integration's page path."""
        return f"/account/integrations/{quote(self.record.id, safe='')}"

    def url(self, path: str = "", **params: str) -> str:
        """A path under the integration's page with these parameters and the carried view."""
        query = "&".join(q for q in (urlencode(params) if params else "", self.carry) if q)
        return self.base + path + (f"?{query}" if query else "")

    def chat_url(self, conversation: str) -> str:
        """The explanation page of one chat (an id of dots alone goes in the query: a
        browser would read `.` or `..` in a path as a step up, even percent-encoded)."""
        if conversation.strip(".") == "":
            return self.url("/chats", conversation_id=conversation)
        return self.url("/chats/" + quote(conversation, safe=""))

    def moment(self, iso: str | None) -> str:
        """An ISO time as the page writes it, in the chosen zone."""
        if not iso:
            return ""
        at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(self.zone or UTC)
        return f"{at:%Y-%m-%d %H:%M:%S}"


async def _view(request: Request) -> View | Response:
    """The signed-in page and its integration, or the response instead."""
    found = await page_with_integration(request)
    if isinstance(found, Response):
        return found
    page, record = found
    return View(page, record, chosen_zone(request), carried(request.query_params))


def chosen_zone(request: Request) -> ZoneInfo | None:
    """The integration page's time zone, carried here; UTC when none or not a zone."""
    try:
        return zone_of(request.query_params.get("tz", "")[:64] or None)
    except BadRequest:
        return None


# --- a delivery as the page shows it -------------------------------------------------------


def _reason(reason: str | None) -> tuple[str, str]:
    """(words, code) of a delivery's reason such as `invalid: body is not JSON`."""
    if not reason:
        return "", ""
    found = REASON_CODE.fullmatch(reason)
    if found is None:
        return sentence(reason), ""
    return sentence(found.group(2)), found.group(1)


def _group(event: dict[str, Any]) -> str:
    name, gid = event.get("group_name"), event.get("group_id")
    if name:
        return str(name)
    if gid:
        return "name not sent"
    return "No group"


def shown_delivery(view: View, delivery: dict[str, Any]) -> dict[str, Any]:
    """One delivery, worded for the page (every value stays text: the template escapes)."""
    status = int(delivery["status"])
    words, code = _reason(delivery.get("reason"))
    return {
        "id": delivery["id"],
        "received": view.moment(delivery["received_at"]),
        "received_at": delivery["received_at"],
        "status": status,
        "accepted_request": status == 202,
        "answer": (WEBHOOK_ANSWERS if delivery["path"] == "webhook" else {}).get(
            status, ANSWERS.get(status, "Not accepted")
        ),
        "path": PATHS.get(delivery["path"], delivery["path"]),
        "reason": words,
        "reason_code": code,
        "accepted": delivery["accepted"],
        "ignored": delivery["ignored"],
        "events": [
            {
                "event": EVENTS.get(e["event"], e["event"]),
                "event_name": e["event"],
                "conversation_id": e["conversation_id"],
                "chat_url": view.chat_url(e["conversation_id"]),
                "kind": KINDS.get(e["kind"], e["kind"]),
                "terminal": e["kind"] in ("solved", "deleted"),
                "time": view.moment(e["time"]),
                "time_iso": e["time"],
                "group": _group(e),
                "group_id": e.get("group_id") or "",
            }
            for e in delivery["events"]
        ],
    }


async def recent_deliveries(page: Page, record: Integration) -> list[dict[str, Any]]:
    """The few newest deliveries the integration page shows (in its chosen zone)."""
    view = View(page, record, chosen_zone(page.request), carried(page.request.query_params))
    found = await read_deliveries(
        page.redis, page.redis_keys, page.settings, record.shard, record.id, limit=RECENT
    )
    return [shown_delivery(view, d) for d in found]


# --- the log -------------------------------------------------------------------------------


async def get_deliveries(request: Request) -> Response:
    """The deliveries log: newest first, searchable by conversation id, `before` pages on."""
    found = await _view(request)
    if isinstance(found, Response):
        return found
    view, params = found, request.query_params
    page, record = view.page, view.record
    conversation = params.get("conversation_id", "")[: MAX_ID_CHARS + 1].strip()
    before = params.get("before", "")[:40] or None
    problem = None
    if len(conversation) > MAX_ID_CHARS:
        problem = f"A conversation id has at most {MAX_ID_CHARS} characters."
        conversation = conversation[:MAX_ID_CHARS]
        listed: list[dict[str, Any]] = []
    else:
        if before is not None and not DELIVERY_ID.fullmatch(before):
            before = None  # a mangled link: show the newest instead
        listed = await read_deliveries(
            page.redis,
            page.redis_keys,
            page.settings,
            record.shard,
            record.id,
            conversation=conversation or None,
            limit=PAGE_SIZE + 1,
            before=before,
        )
    more = len(listed) > PAGE_SIZE
    shown = [shown_delivery(view, d) for d in listed[:PAGE_SIZE]]
    search = {"conversation_id": conversation} if conversation else {}
    context = {
        "title": f"Deliveries of {record.name}",
        "record": record,
        "view": view,
        "deliveries": shown,
        "conversation": conversation,
        "search_problem": problem,
        "paged": before is not None,
        "older": view.url("/deliveries", **search, before=shown[-1]["id"]) if more else None,
        "newest": view.url("/deliveries", **search),
        "explain_url": view.chat_url(conversation) if conversation and not problem else None,
        "kept": page.settings.deliveries_kept,
        "kept_days": page.settings.deliveries_days,
    }
    return page.render("deliveries.html", context)


# --- one chat ------------------------------------------------------------------------------


def _assignment(view: View, found: dict[str, Any] | None) -> str:
    """The chat's latest group seen on the webhook path, in words ("" when none)."""
    if not found:
        return ""
    group = f"group id {found['group_id']}" if found.get("group_id") else "no group"
    if found.get("source") == "freshchat_conversation_lookup":
        return f"{group}, as Freshchat's conversation lookup answered"
    return f"{group}, assigned {view.moment(found.get('at'))} {view.zone_name} (Freshchat webhook)"


def shown_chat(view: View, found: dict[str, Any]) -> dict[str, Any]:
    """The explanation as the page words it."""
    start = found.get("interval_start")
    interval = ""
    if start:
        at = datetime.fromisoformat(start.replace("Z", "+00:00"))
        local = at.astimezone(view.zone or UTC)
        interval = f"{local:%Y-%m-%d} {interval_label(at, 15, view.zone)}"
    why = found.get("why") or {}
    return {
        "conversation_id": found["conversation_id"],
        "counted": bool(found["counted"]),
        "kind": KINDS.get(found["kind"], "") if found.get("kind") else "",
        "time": view.moment(found.get("time")),
        "time_iso": found.get("time") or "",
        "interval": interval,
        "interval_start": start or "",
        "queue": found.get("queue") or "",
        "why": sentence(str(why.get("text", ""))),
        "why_code": str(why.get("code", "")),
        "assignment": _assignment(view, found.get("assignment")),
        "deliveries": [shown_delivery(view, d) for d in found.get("deliveries", [])],
    }


async def get_chat(request: Request) -> Response:
    """Explain one chat: counted or not, kind, time, interval, queue and why, with the
    deliveries that mention it; a page saying what to check when the chat is unknown."""
    found = await _view(request)
    if isinstance(found, Response):
        return found
    view = found
    page, record = view.page, view.record
    conversation = request.path_params.get("conversation_id")
    if conversation is None:  # /chats?conversation_id=… (an id a path cannot carry)
        conversation = request.query_params.get("conversation_id", "")
    conversation = conversation[: MAX_ID_CHARS + 1]
    if not conversation.strip():
        return RedirectResponse(view.url("/deliveries"), 303)
    context: dict[str, Any] = {
        "title": f"Chat {conversation}",
        "record": record,
        "view": view,
        "conversation": conversation,
        "search_url": view.url("/deliveries", conversation_id=conversation),
        "kept": page.settings.deliveries_kept,
        "kept_days": page.settings.deliveries_days,
        "chat_days": page.settings.chat_ttl_days,
    }
    if len(conversation) > MAX_ID_CHARS:
        return page.render("chat_unknown.html", {**context, "too_long": True}, 404)
    try:
        explained = await explain(page.redis, page.redis_keys, page.settings, record, conversation)
    except NotFound:
        return page.render("chat_unknown.html", {**context, "too_long": False}, 404)
    return page.render("chat.html", {**context, "chat": shown_chat(view, explained)})
