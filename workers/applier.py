"""Thin Python wrapper around the apply and end-drain scripts (`app/lua/`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

from app.lua import Lua, bind
from app.redis_keys import RedisKeys, text
from app.settings import Settings


@dataclass(frozen=True)
class BatchResult:
    """What one apply call did."""

    last_id: str
    applied: int
    needs: list[tuple[str, str]]
    dead_ids: list[str]
    error: str


@dataclass
class Applier:
    """Runs the apply script for one shard's stream (or its dead-letter stream)."""

    redis: Redis
    settings: Settings

    def __post_init__(self) -> None:
        self.redis_keys = RedisKeys(self.settings.key_prefix)
        # redis-py's Script sends EVALSHA and loads the source again after NOSCRIPT
        # (a Redis restart), so nothing needs loading up front.
        self._apply = bind(self.redis, Lua.APPLY)
        self._end_drain = bind(self.redis, Lua.END_DRAIN)

    def apply(
        self,
        shard: int,
        start: str = "-",
        *,
        count: int | None = None,
        dead_letter: bool = False,
        end: str = "+",
        parked: str = "",
    ) -> BatchResult:
        """Apply up to `count` entries from `start` of the shard's stream (events that wait for
        a group name are parked), of its dead-letter stream, or of `parked`'s parking stream."""
        rk = self.redis_keys
        source = rk.stream(shard)
        if dead_letter:
            source = rk.dead(shard)
        elif parked:
            source = rk.parked(shard, parked)
        out = self._apply(
            keys=[source, rk.dead(shard), rk.stats(shard)],
            args=[
                rk.shard_prefix(shard),
                start,
                count or self.settings.drain_batch,
                self.settings.chat_ttl_days * 86_400_000,
                self.settings.counts_retention_days * 86_400,
                int(time.time()),
                "1" if dead_letter else "0",
                end,
                self.settings.changes_retention_days * 24,
                "0" if dead_letter or parked else "1",
                parked,
            ],
        )
        last, applied, needs, dead_ids, error = out
        pairs = [(text(needs[i]), text(needs[i + 1])) for i in range(0, len(needs), 2)]
        return BatchResult(
            text(last), int(applied), pairs, [text(d) for d in dead_ids], text(error)
        )

    def release(self, shard: int, start: str) -> bool:
        """Drop the drain flag unless entries arrived past `start`; True if more to do."""
        keys = [self.redis_keys.stream(shard), self.redis_keys.drain_flag(shard)]
        return bool(self._end_drain(keys=keys, args=[start]))

    def hold(self, shard: int) -> None:
        """(Re)take the drain flag's lease while this drain runs."""
        lease_ms = int(self.settings.drain_lease_seconds * 1000)
        self.redis.set(self.redis_keys.drain_flag(shard), "1", px=lease_ms)
