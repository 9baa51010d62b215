"""The deliveries log (§7): what each integration's app sent, kept per integration.

The ingest script writes one entry per request in the same call that stores its events
(`s` status, `m` note "<ignored>:<event letters>", `e` the stored compact events); this
module writes the rejects the script never sees (a bad body with a good key) and the
app's lifecycle events, and reads the log back. No key, `iparams` or other payload field
is ever kept: the compact events hold only what counting uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from app.compact import Kind, chat_key, conversation_id_of
from app.errors import AppError, BadRequest
from app.events import ConversationEvent, OtherEvent
from app.intervals import iso_utc
from app.redis_client import STORAGE_ERRORS
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from app.webhook_events import ACTION_LETTERS

log = logging.getLogger("injixo.deliveries")

#: One letter per counted event in a delivery's note (the payload's `event`).
EVENT_LETTERS = {
    "onConversationCreate": "c",
    "onConversationUpdate": "u",
    "onConversationDelete": "d",
}
EVENT_NAMES = {letter: name for name, letter in (EVENT_LETTERS | ACTION_LETTERS).items()}
WEBHOOK = "w"  # a note that starts with it is a Freshchat webhook request's (§12)
LIFECYCLE = ("onAppInstall", "onAppUninstall")
KINDS = {
    int(Kind.OTHER): "other",
    int(Kind.SOLVED): "solved",
    int(Kind.DELETED): "deleted",
    int(Kind.SOLVED_GROUP_UNNAMED): "solved",
    int(Kind.ASSIGNED): "assigned",
}
PAGE = 200  # entries read per Redis call while searching


def delivery_note(
    events: Sequence[ConversationEvent | OtherEvent], ignored: int
) -> tuple[str, str]:
    """The request's note for the log, and the last app lifecycle event in it ("" if none)."""
    letters = []
    lifecycle = ""
    for event in events:
        if isinstance(event, ConversationEvent):
            letters.append(EVENT_LETTERS.get(event.event, "u"))
        elif ignored and event.event in LIFECYCLE:
            lifecycle = event.event
    return f"{ignored}:{''.join(letters)}", lifecycle


@dataclass
class DeliveryLog:
    """Writes what the ingest script does not: rejects before storing, lifecycle events."""

    redis: Redis
    settings: Settings

    def __post_init__(self) -> None:
        self.redis_keys = RedisKeys(self.settings.key_prefix)

    async def reject(
        self, shard: int, integration_id: str, exc: AppError, webhook: bool = False
    ) -> None:
        """Log a request of this integration refused before its events were stored."""
        if not self.settings.deliveries_kept:
            return
        message = exc.message
        if isinstance(exc, BadRequest) and exc.detail:
            where = ".".join(str(p) for p in exc.detail[0].get("loc", []))
            message = f"{message} ({where}: {exc.detail[0].get('msg', '')})"[:300]
        stream = self.redis_keys.deliveries(shard, integration_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(
                    stream,
                    {
                        "s": str(exc.status),
                        "r": exc.reason,
                        "x": message,
                        "m": WEBHOOK + "0:" if webhook else "0:",
                        "e": "",
                    },
                    maxlen=self.settings.deliveries_kept,
                    approximate=True,
                )
                pipe.expire(stream, self.settings.deliveries_days * 86_400)
                await pipe.execute()
        except STORAGE_ERRORS:
            log.warning("could not log a rejected delivery")

    async def lifecycle(self, integration_id: str, event: str) -> None:
        """Record when the injixo app was installed or uninstalled (§7, §8)."""
        keys = self.redis_keys
        target = keys.app_installed() if event == "onAppInstall" else keys.app_uninstalled()
        try:
            await self.redis.hset(target, integration_id, int(time.time()))
        except STORAGE_ERRORS:
            log.warning("could not record an app lifecycle event")


def _events(raw: bytes, note: str) -> list[dict[str, Any]]:
    letters = note.partition(":")[2]
    path = "webhook" if note.startswith(WEBHOOK) else "app"
    out = []
    for n, line in enumerate(raw.split(b"\n") if raw else []):
        _, chat, kind, time_ms, group_id, group_name = orjson.loads(line)
        out.append(
            {
                "event": EVENT_NAMES.get(letters[n : n + 1], "onConversationUpdate"),
                "conversation_id": conversation_id_of(chat),
                "kind": KINDS.get(kind, "other"),
                "time": iso_utc(datetime.fromtimestamp(time_ms / 1000, UTC)),
                "group_id": group_id or None,
                "group_name": group_name or None,
                "path": path,
            }
        )
    return out


def _delivery(entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    status = int(fields.get(b"s", b"0"))
    note = text(fields.get(b"m", b"0:"))
    events = _events(fields.get(b"e", b""), note)
    ignored = int(note.partition(":")[0].lstrip(WEBHOOK) or 0)
    return {
        "id": entry_id,
        "path": "webhook" if note.startswith(WEBHOOK) else "app",
        "received_at": iso_utc(datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, UTC)),
        "status": status,
        "reason": _reason(status, fields, note.startswith(WEBHOOK)),
        "accepted": len(events) if status == 202 else 0,
        "ignored": ignored if status == 202 else 0,
        "events": events,
    }


def _reason(status: int, fields: dict[bytes, bytes], webhook: bool) -> str | None:
    if b"r" in fields:
        detail = text(fields.get(b"x", b""))
        return f"{text(fields[b'r'])}: {detail}" if detail else text(fields[b"r"])
    if status == 401 and webhook:  # the ingest script found the webhook gone
        return "not_found: the webhook was deleted or given a new URL"
    if status == 401:
        return "unauthorized: the API key was revoked"
    if status == 429:
        return "rate_limited: over the integration's event rate"
    return None


async def read_deliveries(
    redis: Redis,
    keys: RedisKeys,
    settings: Settings,
    shard: int,
    integration_id: str,
    *,
    conversation: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """The integration's kept deliveries, newest first (those mentioning `conversation`)."""
    stream = keys.deliveries(shard, integration_id)
    oldest_ms = int(time.time() * 1000) - settings.deliveries_days * 86_400_000
    wanted = orjson.dumps(chat_key(conversation)) if conversation else None
    found: list[dict[str, Any]] = []
    end = "+"
    if before:
        ms, _, seq = before.partition("-")
        if int(ms) == 0 and int(seq or 0) == 0:
            return []  # nothing is older than the first possible id (Redis refuses "(0-0")
        end = f"({int(ms)}-{int(seq or 0)}"
    while len(found) < limit:
        page: list[Any] = list(
            await redis.xrevrange(stream, max=end, min=f"{oldest_ms}-0", count=PAGE) or []
        )
        for raw_id, fields in page:
            entry_id = text(raw_id)
            if wanted is not None and wanted not in fields.get(b"e", b""):
                continue
            delivery = _delivery(entry_id, fields)
            if conversation and not any(
                e["conversation_id"] == conversation for e in delivery["events"]
            ):
                continue  # the id appeared in another field (a group name)
            found.append(delivery)
            if len(found) == limit:
                break
        if len(page) < PAGE:
            break
        end = "(" + text(page[-1][0])
    return found
