"""Explain a chat (§7): counted or not, where, when and why, with the deliveries naming it.

The apply script ends a counted chat's state with a digit saying how its queue was
decided; the rest of the state is its terminal time and queue id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from app.chat_state import ASSIGNMENT, assignment_of, bucket_count, bucket_of, state_of
from app.compact import chat_key
from app.deliveries import read_deliveries
from app.errors import NotFound
from app.integration import Integration
from app.intervals import iso_utc
from app.lua import CHAT_EPOCH_MS, QUEUE_BITS, SLOT_MS, UNDEFINED_QUEUE
from app.redis_keys import RedisKeys, text
from app.settings import Settings

#: The apply script's why digits (`app/lua/apply.lua`), and what they mean.
WHY = {
    "1": ("group_name_in_event", "the event named the chat's Freshchat group"),
    "2": ("group_name_learnt", "an earlier event of the same group carried its name"),
    "3": ("group_name_from_freshchat", "Freshchat's API named the chat's group"),
    "4": ("no_group", "the chat had no Freshchat group when it was solved"),
    "5": ("deleted_or_spam", "the chat was deleted or marked as spam"),
    "6": ("group_not_in_freshchat", "Freshchat does not know the chat's group (404)"),
    "7": (
        "group_from_assignment",
        "the resolution named no group; the chat's latest assignment (Freshchat webhook) did",
    ),
    "8": (
        "group_from_freshchat_conversation",
        "the resolution named no group and no assignment was seen; Freshchat's conversation "
        "lookup did",
    ),
}
NOT_COUNTED = {
    "waiting_for_group_name": "solved, waiting for Freshchat to name its group; "
    "counted once the name is known",
    "waiting_for_chat_group": "solved with no group named, waiting for Freshchat to tell the "
    "chat's group; counted once it answers",
    "not_applied_yet": "delivered, waiting for a worker to count it",
    "not_terminal_yet": "not solved (nor deleted) yet: a chat is counted when it is solved",
}


def decode_state(raw: str) -> tuple[int, int, str]:
    """(terminal time ms, queue id, why digit) of a chat state the apply script wrote."""
    number, why = raw[:-1], raw[-1:]
    if ":" in number:
        t, q = number.split(":")
        return int(t), int(q), why
    n = int(number)
    return n // QUEUE_BITS + CHAT_EPOCH_MS, n % QUEUE_BITS, why


def _assignment(raw: bytes | str | None) -> dict[str, Any] | None:
    """The chat's latest assignment seen on the webhook path, or Freshchat's lookup (§12)."""
    if raw is None:
        return None
    at, gid = assignment_of(text(raw))
    return {
        "group_id": gid or None,
        "at": iso_utc(datetime.fromtimestamp(at / 1000, UTC)) if at else None,
        "source": "webhook_assignment" if at else "freshchat_conversation_lookup",
    }


def _why(code: str, words: str) -> dict[str, str]:
    return {"code": code, "text": words}


async def explain(
    redis: Redis, keys: RedisKeys, settings: Settings, integration: Integration, conversation: str
) -> dict[str, Any]:
    """The explanation of one chat; NotFound when it was never seen (or expired)."""
    shard, iid = integration.shard, integration.id
    chat = chat_key(conversation)
    n = bucket_count(await redis.hget(keys.chat_buckets(shard), iid))
    raw, assigned = await redis.hmget(
        keys.chat_bucket(shard, iid, bucket_of(chat, n)), [chat, ASSIGNMENT + chat]
    )
    deliveries = await read_deliveries(
        redis, keys, settings, shard, iid, conversation=conversation, limit=20
    )
    out: dict[str, Any] = {"conversation_id": conversation, "counted": False, "kind": None}
    out |= {"time": None, "interval_start": None, "queue": None}
    out["assignment"] = _assignment(assigned)
    if raw is not None:
        t, q, digit = decode_state(state_of(text(raw)))
        queue = UNDEFINED_QUEUE
        if q:
            name = await redis.hget(keys.queue_names(shard, iid), f"#{q}")
            queue = text(name) if name is not None else UNDEFINED_QUEUE
        code, words = WHY.get(digit, ("unknown", "recorded before reasons were kept"))
        out |= {
            "counted": True,
            "kind": "deleted" if code == "deleted_or_spam" else "solved",
            "time": iso_utc(datetime.fromtimestamp(t / 1000, UTC)),
            "interval_start": iso_utc(datetime.fromtimestamp(t // SLOT_MS * SLOT_MS / 1000, UTC)),
            "queue": queue,
            "why": _why(code, f"counted in {queue}: {words}"),
        }
        return out | {"deliveries": deliveries}
    events = [
        e for d in deliveries if d["status"] == 202 for e in d["events"]
        if e["conversation_id"] == conversation
    ]  # fmt: skip
    if not events:
        if deliveries:  # only refused requests named it
            return out | {
                "why": _why("not_applied_yet", "only refused requests named it"),
                "deliveries": deliveries,
            }
        raise NotFound("chat not found: never seen in this integration's kept deliveries or counts")
    terminal = [e for e in events if e["kind"] in ("solved", "deleted")]
    out["kind"] = terminal[-1]["kind"] if terminal else None
    parked = bool(terminal) and await redis.sismember(keys.parked_integrations(shard), iid)
    if not terminal:
        code = "not_terminal_yet"
    elif parked and any(e["group_id"] and not e["group_name"] for e in terminal):
        code = "waiting_for_group_name"
    elif parked and any(not e["group_id"] and e["path"] == "webhook" for e in terminal):
        code = "waiting_for_chat_group"
    else:
        code = "not_applied_yet"
    return out | {"why": _why(code, NOT_COUNTED[code]), "deliveries": deliveries}
