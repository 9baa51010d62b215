"""Helpers of the backfill tests (§13): settings, an integration on the stand-in, rows and
the counts they must give."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.asyncio import Redis as AsyncRedis

from app.integration import Integration, NewIntegration
from app.integrations import Integrations
from app.lua import SLOT_MS, UNDEFINED_QUEUE
from app.settings import Settings
from tests.extract_standin import ExtractRow, ExtractStandIn
from tests.support import make_settings

GROUPS = [("g-1", "Customer Support"), ("g-2", "Billing"), ("g-3", "Sales | EU: 🚀"), None]


def backfill_settings(url: str, **overrides: Any) -> Settings:
    """Test settings for backfills: http stand-ins allowed, no submission spacing."""
    values: dict[str, Any] = {
        "freshchat_allow_insecure": True,
        "backfill_submit_every_seconds": 0,
        **overrides,
    }
    return make_settings(url, **values)


def new_integration(settings: Settings, standin: ExtractStandIn, name: str = "Acme") -> Integration:
    """An integration whose Freshchat is the stand-in (created by the product's own code)."""

    async def go() -> Integration:
        redis = AsyncRedis.from_url(settings.redis_url)
        try:
            new = NewIntegration(
                name=name, freshchat_domain=standin.domain, freshchat_api_key=standin.script.api_key
            )
            return await Integrations(redis, settings).create(new, None)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def today() -> date:
    """Today, UTC."""
    return datetime.now(UTC).date()


def day_start_ms(day: date) -> int:
    """Epoch ms of a UTC day's 00:00."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def random_rows(
    rng: random.Random, first: date, days: int, chats: int, groups: list[Any] = GROUPS
) -> list[ExtractRow]:
    """Solved chats spread over `days` UTC days from `first`; a tenth resolved twice (the
    extract lists each resolution), some without a group."""
    start = day_start_ms(first)
    rows = []
    for _ in range(chats):
        cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for _ in range(2 if rng.random() < 0.1 else 1):
            group = rng.choice(groups)
            when = start + rng.randrange(days * 86_400_000)
            rows.append(ExtractRow(cid, when, *(group or ("", ""))))
    rng.shuffle(rows)
    return rows


def slot_iso(ms: int) -> str:
    """The 15-minute interval of a time, as `support.counts` keys it."""
    return datetime.fromtimestamp((ms - ms % SLOT_MS) / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def expected_counts(
    rows: list[ExtractRow], names: dict[str, str] | None = None
) -> dict[tuple[str, str], int]:
    """§4 for imported rows: each chat once, at its earliest resolution (ties: smallest
    queue name); queue = the row's group name, else the name Freshchat gives its group id."""
    names = names or {}
    best: dict[str, tuple[int, str]] = {}
    for r in rows:
        queue = r.group_name or names.get(r.group_id, "") or UNDEFINED_QUEUE
        if r.group_id == "" and not r.group_name:
            queue = UNDEFINED_QUEUE
        candidate = (r.resolved_ms, queue)
        if r.conversation_id not in best or candidate < best[r.conversation_id]:
            best[r.conversation_id] = candidate
    out: dict[tuple[str, str], int] = {}
    for when, queue in best.values():
        key = (slot_iso(when), queue)
        out[key] = out.get(key, 0) + 1
    return out


def days_ago(n: int) -> str:
    """A UTC day `n` days before today, as YYYY-MM-DD."""
    return (today() - timedelta(days=n)).isoformat()
