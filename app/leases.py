"""A Redis lease with a holder token: one worker at a time works on a thing, and a worker
whose lease ran out (killed, stalled) can no longer write once another took over.

Writes go in one MULTI under WATCH of the lease key, after checking the token (no Lua: a
transaction is enough and keeps the scripts in `app/lua` to the counting path's). A thread
renews the lease while its holder works, so a long HTTP call does not lose it.

On a Redis Cluster (§14) the same holds as long as every key written under a lease shares
the lease key's slot (the backfill keys all carry the shard's hash tag): redis-py's cluster
pipeline runs a WATCH/MULTI/EXEC on the node serving that slot, and only when asked for a
transaction explicitly (`pipeline()` alone is not one there).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis, WatchError
from redis.client import Pipeline

from app.lua import Lua, bind
from app.redis_keys import text


class LeaseLost(Exception):
    """Another worker took the backfill over (this one's lease ran out)."""


@dataclass
class Lease:
    """A Redis lease with a token; writes made under it fail once it is someone else's."""

    redis: Redis
    key: str
    ttl_ms: int
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        return bool(self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def write(self, fill: Callable[[Pipeline], None]) -> list[Any]:
        """Run `fill`'s commands in one MULTI, only while the lease is ours (renewing it)."""
        for _ in range(20):
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.key)  # type: ignore[no-untyped-call]
                    if text(pipe.get(self.key) or b"") != self.token:
                        self.lost.set()
                        raise LeaseLost(f"lease {self.key} is no longer held")
                    pipe.multi()
                    fill(pipe)
                    pipe.pexpire(self.key, self.ttl_ms)
                    return list(pipe.execute())[:-1]
                except WatchError:  # the heartbeat renewed it meanwhile: read it again
                    continue
        raise LeaseLost(f"lease {self.key} kept changing")

    def renew(self) -> bool:
        """Extend the lease if it is still ours."""
        try:
            self.write(lambda pipe: None)
        except LeaseLost:
            return False
        return True

    def release(self) -> None:
        """Stop renewing and give the lease up (only if still ours)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        bind(self.redis, Lua.UNLOCK)(keys=[self.key], args=[self.token])

    def keep_alive(self) -> None:
        """Renew in a thread while the holder works (HTTP calls can outlast the lease)."""

        def beat() -> None:
            while not self._stop.wait(self.ttl_ms / 4000):
                try:
                    if not self.renew():
                        return
                except Exception:  # a Redis hiccup: try again; writes check ownership
                    continue

        self._beat = threading.Thread(target=beat, name="backfill-lease", daemon=True)
        self._beat.start()


def compare_and_delete(redis: Redis, key: str, value: str) -> None:
    """Delete `key` if it still holds `value` (changed meanwhile: no longer ours to delete)."""
    bind(redis, Lua.UNLOCK)(keys=[key], args=[value])
