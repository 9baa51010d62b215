"""Request and response bodies of the backfill API (§13), as pydantic models (/openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DAY = r"^\d{4}-\d{2}-\d{2}$"


class BackfillIn(BaseModel):
    """`POST /v1/integrations/{id}/backfills` (UTC days, inclusive; checked by the store)."""

    model_config = ConfigDict(extra="forbid")

    from_: str = Field(
        alias="from",
        pattern=DAY,
        description="first UTC day to import, YYYY-MM-DD (within the counts retention)",
    )
    to: str = Field(
        pattern=DAY,
        description="last UTC day to import, YYYY-MM-DD, inclusive, not in the future",
    )


class BackfillOut(BaseModel):
    """One backfill and its progress."""

    backfill_id: str
    integration_id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    from_: str = Field(alias="from", description="first UTC day imported")
    to: str = Field(description="last UTC day imported (inclusive)")
    windows_total: int = Field(
        ge=0, description="reports Freshchat prepares, one per BACKFILL_WINDOW_DAYS days"
    )
    windows_done: int = Field(ge=0, description="reports imported so far")
    rows_read: int = Field(ge=0, description="rows of the downloads read so far")
    rows_skipped: int = Field(ge=0, description="malformed rows skipped")
    chats_counted: int = Field(ge=0, description="solved chats handed to the counting")
    created_at: int | None = Field(description="Unix time")
    started_at: int | None = Field(description="Unix time a worker began, null while queued")
    finished_at: int | None = Field(description="Unix time it ended, null until then")
    eta_seconds: int | None = Field(description="estimated seconds left while running")
    error: str | None = Field(description="why it failed")


class BackfillList(BaseModel):
    """`GET /v1/integrations/{id}/backfills`: newest first."""

    backfills: list[BackfillOut]


def backfill_out(record: dict[str, Any]) -> BackfillOut:
    """A store record (`app.backfills.view`) as the API answers it."""
    return BackfillOut.model_validate(record)
