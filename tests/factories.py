"""Realistic Freshworks payloads built from the shared fixtures, and test settings."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from app.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "freshworks"
ADMIN_TOKEN = "test-admin-token-0123456789"
READER_TOKEN = "test-reader-token-0123456789"
ENCRYPTION_KEY = Fernet.generate_key().decode()
IPARAMS_MARKER = "IPARAMS-MARKER-7f3a9c"


def fixture(name: str) -> dict[str, Any]:
    """One of the shared sample payloads."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


_BASE = fixture("conversation_update_resolved") if FIXTURES.exists() else {}


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    """Settings for tests (no .env file is read)."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "admin_token": ADMIN_TOKEN,
        "reader_tokens": READER_TOKEN,
        "encryption_key": ENCRYPTION_KEY,
        "drain_lease_seconds": 2.0,
        "janitor_interval_seconds": 0.5,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def env_for(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce these settings in a subprocess."""
    return {
        "REDIS_URL": settings.redis_url,
        "ADMIN_TOKEN": settings.admin_token,
        "READER_TOKENS": settings.reader_tokens,
        "ENCRYPTION_KEY": settings.encryption_key,
        "DRAIN_LEASE_SECONDS": str(settings.drain_lease_seconds),
        "JANITOR_INTERVAL_SECONDS": str(settings.janitor_interval_seconds),
        "FRESHCHAT_ALLOW_INSECURE": str(settings.freshchat_allow_insecure).lower(),
        "SHARDS": str(settings.shards),
    }


def at(text: str) -> int:
    """Epoch milliseconds of an ISO time (`2026-11-23T08:07Z`)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    """ISO 8601 (ms precision, Z) of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def conv_event(
    chat: str,
    status: str,
    time_ms: int,
    group: tuple[str, str] | None = None,
    *,
    event: str = "onConversationUpdate",
    resolved_time_ms: int | None = None,
    group_id_only: str | None = None,
    **conversation: Any,
) -> dict[str, Any]:
    """A conversation event shaped like the platform's (~2.5 KB), with iparams set."""
    payload = copy.deepcopy(_BASE)
    payload["event"] = event
    payload["timestamp"] = time_ms
    payload["iparams"] = {"injixo_api_key": IPARAMS_MARKER, "injixo_url": IPARAMS_MARKER}
    conv = payload["data"]["conversation"]
    conv["conversation_id"] = chat
    conv["status"] = status
    conv.pop("resolved_time", None)
    if resolved_time_ms is not None:
        conv["resolved_time"] = iso(resolved_time_ms)
    assoc = payload["data"]["associations"]
    if group is not None:
        conv["assigned_group_id"] = group[0]
        assoc["group"] = {"id": group[0], "name": group[1], "description": "", "routing_type": "X"}
    else:
        conv["assigned_group_id"] = group_id_only
        assoc.pop("group", None)
    payload["data"]["changes"] = {"model_changes": {"status": ["assigned", status]}}
    conv.update(conversation)
    return payload
