"""Every Lua script of the product (this folder), one loader, and what the scripts answer.

Values that Python and Lua must agree on are named here once; `tests/test_lua.py` reads
the scripts and checks that they use the same ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script

HERE = Path(__file__).resolve().parent


class Lua(StrEnum):
    """The scripts, by file name."""

    INGEST = "ingest"  # store a group commit's requests in a shard stream (web tier)
    APPLY = "apply"  # count a batch of stream entries (workers)
    END_DRAIN = "end_drain"  # drop a shard's drain flag unless entries arrived meanwhile
    UNLOCK = "unlock"  # release a lock only if the caller still holds it


@dataclass(frozen=True)
class LuaScript:
    """A script's source and SHA1 (for EVALSHA)."""

    name: str
    source: str
    sha: str


@cache
def load(script: Lua) -> LuaScript:
    """The script's source, read once per process."""
    source = (HERE / f"{script.value}.lua").read_text()
    return LuaScript(script.value, source, hashlib.sha1(source.encode()).hexdigest())


def bind(redis: Redis, script: Lua) -> Script:
    """A synchronous callable for the script (EVALSHA; loads it again after NOSCRIPT)."""
    return redis.register_script(load(script).source)


# --- What the ingest script answers per request ----------------------------------------

STORED = 0
KEY_NOT_ACTIVE = -1
RATE_LIMITED_BASE = 100  # -(100 + s): over the integration's rate, retry after s seconds


class Stored(Enum):
    """The outcome of one request's write."""

    OK = "ok"
    KEY_NOT_ACTIVE = "key_not_active"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """One request's outcome, with the seconds to wait when rate limited."""

    stored: Stored
    retry_after: int = 0


STORED_OK = StoreOutcome(Stored.OK)


def store_outcome(code: int) -> StoreOutcome:
    """Decode one of the ingest script's per-request codes."""
    if code == STORED:
        return STORED_OK
    if code == KEY_NOT_ACTIVE:
        return StoreOutcome(Stored.KEY_NOT_ACTIVE)
    if code <= -RATE_LIMITED_BASE:
        return StoreOutcome(Stored.RATE_LIMITED, -code - RATE_LIMITED_BASE)
    raise ValueError(f"unknown ingest script code {code}")


# --- Values the apply script and Python share -------------------------------------------

UNDEFINED_QUEUE = "Undefined_Queue"  # deleted/spam chats and chats without a group (§4)
NEGATIVE_MARK = "\0"  # group map value "\0<expiry>": Freshchat has no such group
POSITIVE_MARK = "\1"  # group map value "\1<expiry>\1<name>": a name learnt from Freshchat
SLOT_MS = 15 * 60 * 1000  # counts are kept per 15-minute UTC slot
SLOTS_PER_DAY = 96
CHAT_EPOCH_MS = 1577836800000  # a chat's state counts time from 2020-01-01T00:00Z...
QUEUE_BITS = 4096  # ...times this, plus its queue id (then the why digit)
#: A need `"@<chat key>"` in place of a group id: the chat's group must come from Freshchat's
#: conversation lookup (§12); the resolver stores it as the chat's assignment (time 0).
CONVERSATION_NEED = "@"
