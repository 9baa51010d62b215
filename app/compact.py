"""What one counted event becomes, whichever way it came in (app, webhook, backfill)."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from enum import IntEnum
from typing import NamedTuple

import orjson


class Kind(IntEnum):
    """What an event means for counting."""

    OTHER = 0
    SOLVED = 1
    DELETED = 2
    #: Solved, the event names no group (a Freshchat webhook, §12): the group is the chat's
    #: latest assignment seen, else Freshchat's conversation lookup, else none.
    SOLVED_GROUP_UNNAMED = 3
    #: Assigned to the group id (webhook path): not terminal, remembered for the above.
    ASSIGNED = 4


class Compact(NamedTuple):
    """What one counted event becomes: small, with no payload left in it."""

    chat: str
    kind: Kind
    time_ms: int
    group_id: str
    group_name: str

    def encode(self, integration_id: str) -> bytes:
        """Stream-entry encoding the apply script decodes (a JSON array)."""
        return orjson.dumps(
            [
                integration_id,
                self.chat,
                int(self.kind),
                self.time_ms,
                self.group_id,
                self.group_name,
            ]
        )


_URL_SAFE = bytes.maketrans(b"+/", b"-_")  # base64 -> base64url
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def chat_key(conversation_id: str) -> str:
    """Short, stable key part for a chat: base64url of a UUID, else `~` + the raw id."""
    if _UUID.fullmatch(conversation_id) is None:  # non-canonical spellings stay distinct
        return "~" + conversation_id
    as_bytes = bytes.fromhex(conversation_id.replace("-", ""))
    return binascii.b2a_base64(as_bytes, newline=False)[:22].translate(_URL_SAFE).decode()


def conversation_id_of(chat: str) -> str:
    """The Freshchat conversation id a `chat_key` was made from (its inverse)."""
    if chat.startswith("~"):
        return chat[1:]
    try:
        return str(uuid.UUID(bytes=base64.urlsafe_b64decode(chat + "==")))
    except ValueError:  # not a key chat_key made: shown as it is
        return chat


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds; 0 (rejected as out of range) if not representable (year 1, -14:00)."""
    try:
        return round(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        return 0
