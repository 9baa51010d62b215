"""The §4.5 property's events and its oracle: any order, with duplicates, same counts."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st

from tests.support import G1, G2, at, conv_event, iso

CHATS = [str(uuid.UUID(int=i + 1)) for i in range(6)]
STATUSES = ["new", "assigned", "resolved", "Resolved", "reopened", "spam", "deleted", "waiting"]
GROUPS = [None, G1, G2, ("g3", "Sales | EU: spécial 🚀")]

event_spec = st.tuples(
    st.sampled_from(CHATS),
    st.sampled_from(STATUSES),
    # seconds after 08:00: few distinct values, so ties and same-interval moves are common
    st.integers(min_value=0, max_value=30).map(lambda m: m * 450),
    st.sampled_from(GROUPS),
    st.booleans(),  # carries resolved_time (a bit earlier than the envelope)
)


def build(spec: tuple[str, str, int, tuple[str, str] | None, bool]) -> dict[str, Any]:
    chat, status, offset, group, with_resolved = spec
    when = at("2026-11-23T08:00") + offset * 1000
    resolved = when - 7_000 if with_resolved and status.lower() == "resolved" else None
    return conv_event(chat, status, when, group, resolved_time_ms=resolved)


def oracle(specs: list[tuple[str, str, int, tuple[str, str] | None, bool]]) -> dict[Any, int]:
    """§4 computed directly: each chat at its earliest terminal event (ties: smaller name)."""
    best: dict[str, tuple[int, str]] = {}
    for chat, status, offset, group, with_resolved in specs:
        s = status.lower()
        if s not in ("resolved", "spam", "deleted"):
            continue
        when = at("2026-11-23T08:00") + offset * 1000
        if s == "resolved" and with_resolved:
            when -= 7_000
        queue = group[1] if s == "resolved" and group else "Undefined_Queue"
        best[chat] = min(best.get(chat, (when, queue)), (when, queue))
    out: dict[Any, int] = {}
    for when, queue in best.values():
        slot_ms = when - when % 900_000
        key = (iso(slot_ms)[:16] + "Z", queue)
        out[key] = out.get(key, 0) + 1
    return out
