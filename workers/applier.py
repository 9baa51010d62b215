"""Thin Python wrapper around `apply.lua` and `release.lua`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

from app.redis_keys import RedisKeys, text
from app.scripts import lua
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
        self.keys = RedisKeys(self.settings.key_prefix)
        apply_src, release_src = lua("workers/apply.lua").source, lua("app/lua/release.lua").source
        self._apply = self.redis.register_script(apply_src)
        self._release = self.redis.register_script(release_src)
        # Loaded up front: EVALSHA then finds them (NOSCRIPT after a Redis restart is still
        # handled by redis-py's Script, which loads and retries).
        for source in (apply_src, release_src):
            self.redis.script_load(source)

    def apply(
        self,
        shard: int,
        start: str = "-",
        *,
        count: int | None = None,
        dead_letter: bool = False,
        end: str = "+",
    ) -> BatchResult:
        """Apply up to `count` entries from `start`; from the dead-letter stream if asked."""
        stream, dead = self.keys.stream(shard), self.keys.dead(shard)
        source = dead if dead_letter else stream
        out = self._apply(
            keys=[source, dead],
            args=[
                self.keys.shard_prefix(shard),
                start,
                count or self.settings.drain_batch,
                self.settings.chat_ttl_days * 86_400_000,
                self.settings.counts_retention_days * 86_400,
                int(time.time()),
                "1" if dead_letter else "0",
                end,
            ],
        )
        last, applied, needs, dead_ids, error = out
        pairs = [(text(needs[i]), text(needs[i + 1])) for i in range(0, len(needs), 2)]
        return BatchResult(
            text(last), int(applied), pairs, [text(d) for d in dead_ids], text(error)
        )

    def release(self, shard: int, start: str) -> bool:
        """Drop the drain flag unless entries arrived past `start`; True if more to do."""
        keys = [self.keys.stream(shard), self.keys.drain_flag(shard)]
        return bool(self._release(keys=keys, args=[start]))

    def hold(self, shard: int) -> None:
        """(Re)take the drain flag's lease while this drain runs."""
        lease_ms = int(self.settings.drain_lease_seconds * 1000)
        self.redis.set(self.keys.drain_flag(shard), "1", px=lease_ms)
