"""Chat buckets outside a batch (§10 memory): the daily sweep, Freshchat's lookup kept as
a chat's assignment, whether chats have one, and state kept the old way moved in. Each is a
mode of the apply script, run through the shard's `Applier` (which splits buckets as
batches need)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial

from app.chat_state import ASSIGNMENT, bucket_count, bucket_of
from app.redis_keys import text
from workers.applier import Applier, Event
from workers.retrying import retrying

log = logging.getLogger("injixo.chat_buckets")

MIGRATE_CHUNK = 200  # old chat keys moved per call
SCHEMA_FIELD, SCHEMA = "/v", b"2"  # in the chat buckets hash: old chat keys are all moved
SWEEP_BUCKETS = 64  # buckets per sweep call: each call holds Redis for about a millisecond


@dataclass
class ChatBuckets:
    """The chat buckets of every shard, kept through `applier`."""

    applier: Applier
    _migrated: set[int] = field(default_factory=set)  # shards whose old chat keys are moved

    def migrate_legacy(self, shard: int) -> int:
        """Move the shard's chat state kept the old way (a key with a TTL per chat) into chat
        buckets, once (the shard's drains call this first); the entries moved."""
        if shard in self._migrated:
            return 0
        key = self.applier.redis_keys.chat_buckets(shard)
        if self.applier.redis.hget(key, SCHEMA_FIELD) == SCHEMA:
            self._migrated.add(shard)
            return 0
        prefix = self.applier.redis_keys.shard_prefix(shard)
        moved, chunk = 0, []
        for letter in ("c", "a"):
            for name in self.applier.redis.scan_iter(match=f"{prefix}{letter}:*", count=1000):
                iid, _, chat = text(name)[len(prefix) + 2 :].partition(":")
                chunk.append((letter, iid, chat))
                if len(chunk) == MIGRATE_CHUNK:
                    moved += self._migrate(shard, chunk)
                    chunk = []
        moved += self._migrate(shard, chunk)
        self.applier.redis.hset(key, SCHEMA_FIELD, SCHEMA)
        self._migrated.add(shard)
        if moved:
            log.info("moved %d chat states of shard %d into chat buckets", moved, shard)
        return moved

    def _migrate(self, shard: int, chunk: list[tuple[str, str, str]]) -> int:
        if not chunk:
            return 0
        events: list[Event | None] = [(iid, chat, 0, 0, "") for _, iid, chat in chunk]
        layouts, _ = self.applier.layouts_for(shard, events)
        short = {
            iid: n for iid, n in layouts.items() if self.applier.layouts.get((shard, iid), 1) < n
        }
        if short:
            self.applier.split_to(shard, short)
        tags = [f"{letter}|{iid}|{chat}" for letter, iid, chat in chunk]
        tags += list(
            dict.fromkeys(f"s|{iid}|{bucket_of(chat, layouts[iid])}" for _, iid, chat in chunk)
        )
        head = [int(time.time()), self.applier.settings.chat_ttl_days]
        moved = int(
            self.applier.run_script(
                shard, self.applier.redis_keys.stream(shard), "migrate", head, tags
            )
        )
        for iid in layouts:
            self.applier.entries.pop((shard, iid), None)  # read again when next needed
        return moved

    def sweep(self, shard: int, now: float | None = None) -> int:
        """Forget the shard's chats untouched for CHAT_TTL_DAYS (§10 retention); how many."""
        key = self.applier.redis_keys.chat_buckets(shard)
        source = self.applier.redis_keys.stream(shard)
        at = int(now if now is not None else time.time())
        gone = 0
        layout = {text(f): v for f, v in retrying(lambda: self.applier.redis.hgetall(key)).items()}
        for field_name in layout:
            if not field_name.endswith("#"):
                continue  # every integration with entries has `<iid>#`, the entries kept
            iid = field_name[:-1]
            n = bucket_count(layout.get(iid))
            for first in range(0, n, SWEEP_BUCKETS):
                tags = [f"s|{iid}|{b}" for b in range(first, min(n, first + SWEEP_BUCKETS))]
                head = [iid, self.applier.settings.chat_ttl_days, at]
                gone += int(
                    retrying(partial(self.applier.run_script, shard, source, "sweep", head, tags))
                )
        return gone

    def remember_lookup(self, shard: int, iid: str, chat: str, group_id: str) -> None:
        """Keep the chat's group from Freshchat's conversation lookup (§12) as its assignment
        at time 0, unless one is known already."""
        key = self.applier.redis_keys.chat_buckets(shard)
        source = self.applier.redis_keys.stream(shard)
        for _ in range(8):
            n = bucket_count(self.applier.redis.hget(key, iid))
            tags = [f"s|{iid}|{bucket_of(chat, n)}"]
            head = [iid, chat, group_id, int(time.time())]
            if int(self.applier.run_script(shard, source, "lookup", head, tags)):
                return
        raise RuntimeError(f"chat buckets of {iid} keep splitting; lookup not kept")

    def assigned(self, shard: int, iid: str, chats: list[str]) -> list[bool]:
        """Whether each chat has an assignment (webhook path or Freshchat's lookup, §12)."""
        if not chats:
            return []
        n = bucket_count(self.applier.redis.hget(self.applier.redis_keys.chat_buckets(shard), iid))
        # Buckets share the shard's hash tag: one pipeline, one node, even on a cluster.
        with self.applier.redis.pipeline(transaction=False) as pipe:
            for chat in chats:
                bucket = self.applier.redis_keys.chat_bucket(shard, iid, bucket_of(chat, n))
                pipe.hexists(bucket, ASSIGNMENT + chat)
            return [bool(x) for x in pipe.execute()]
