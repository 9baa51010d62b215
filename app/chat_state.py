"""Where a chat's state lives: small hashes ("chat buckets") by linear hashing (§10 memory).

The apply script (`app/lua/apply.lua`) keeps every chat of an integration in one of n
buckets and splits them as they fill; Python places a chat the same way to read it.
"""

from __future__ import annotations

import hashlib

HASH_HEX = 7  # hex digits of SHA-1(chat) that place a chat in a bucket
# Entries per bucket after splits, and on average before a batch that would pass SPLIT_AT.
# Linear hashing leaves the buckets not yet split this round with up to twice the average:
# 2 x 40 plus chance stays well under the 128 a listpack keeps.
BUCKET_LOAD = 28
SPLIT_AT = 40
TOUCH_DAYS = 100  # an entry keeps the day it was last touched modulo this (two digits)
ASSIGNMENT = "@"  # field prefix of a chat's latest assignment (§12)


def chat_hash(chat: str) -> int:
    """The chat's placement hash: the first HASH_HEX hex digits of SHA-1 (the apply
    script's `hash_of`)."""
    return int.from_bytes(hashlib.sha1(chat.encode()).digest()[:4]) >> (32 - 4 * HASH_HEX)


def bucket_of(chat: str, buckets: int) -> int:
    """The bucket of `chat` among `buckets`."""
    return place(chat_hash(chat), buckets)


def place(h: int, buckets: int) -> int:
    """The bucket of hash `h` among `buckets` (linear hashing: 2^L <= buckets < 2^(L+1))."""
    low = 1 << (max(buckets, 1).bit_length() - 1)
    b = h % (low * 2)
    return b if b < buckets else h % low


def bucket_count(raw: bytes | str | None) -> int:
    """An integration's number of buckets as stored (absent: one)."""
    return int(raw) if raw is not None else 1


def state_of(raw: str) -> str:
    """A chat's stored state without its touched day: `<state><why digit>`."""
    return raw[:-2]


def assignment_of(raw: str) -> tuple[int, str]:
    """(time ms, group id) of a stored assignment; time 0: from Freshchat's lookup."""
    at, _, gid = raw[2:].partition(":")
    return int(at), gid
