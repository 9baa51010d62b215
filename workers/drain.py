"""The Drainer: applies a shard's pending events in batches (`drain`) and re-applies one
dead-lettered event so that a failure is visible and requeueable in RQ (`apply_event`).

Its dependencies are handed in: the worker runner builds one per process, tests and the
bench build their own. RQ calls the module-level shims at the bottom, which use the
Drainer the running worker installed (`serving`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from redis import Redis

from app.jobs import enqueue_apply_event, enqueue_drain
from app.settings import Settings
from workers.applier import Applier
from workers.groups import GroupResolver

log = logging.getLogger("injixo.drain")


class PoisonEvent(Exception):
    """A stored event that the apply script refuses."""


class GroupNameUnavailable(Exception):
    """Freshchat could not name the event's group yet; requeue later."""


@dataclass
class Drainer:
    """Turns pending events into counts, with the Redis, applier and resolver it is given."""

    settings: Settings
    redis: Redis
    applier: Applier
    resolver: GroupResolver

    @classmethod
    def build(cls, settings: Settings, redis: Redis) -> Drainer:
        """The usual wiring: applier and group resolver on the same Redis."""
        return cls(settings, redis, Applier(redis, settings), GroupResolver(redis, settings))

    def close(self) -> None:
        """Close the resolver's HTTP client (the Redis connection is the caller's)."""
        self.resolver.client.close()

    def drain(self, shard: int) -> dict[str, Any]:
        """Apply the shard's pending events until none are left or the time budget is spent."""
        began = time.monotonic()
        start, applied, batches, dead = "-", 0, 0, 0
        while True:
            self.applier.hold(shard)
            t0 = time.perf_counter()
            result = self.applier.apply(shard, start)
            batches += 1
            if result.last_id or result.needs:
                log.info(
                    "batch",
                    extra={
                        "shard": shard,
                        "applied": result.applied,
                        "dead_lettered": len(result.dead_ids),
                        "waiting_for_group": len(result.needs),
                        "ms": round((time.perf_counter() - t0) * 1000, 2),
                    },
                )
            applied += result.applied
            for dead_id in result.dead_ids:
                enqueue_apply_event(self.redis, self.settings, shard, dead_id)
            dead += len(result.dead_ids)
            if result.needs and self.resolver.resolve(shard, result.needs):
                start = "-"  # names learnt: go back for the entries that waited for them
                continue
            if result.last_id:
                start = "(" + result.last_id
            elif not self.applier.release(shard, start):
                break
            if time.monotonic() - began > self.settings.drain_time_budget_seconds:
                # Keep the flag; let other jobs run first.
                enqueue_drain(self.redis, self.settings, shard)
                break
        summary = {"shard": shard, "applied": applied, "batches": batches, "dead_lettered": dead}
        log.info("drain done", extra=summary)
        return summary

    def apply_event(self, shard: int, dead_id: str) -> dict[str, Any]:
        """Apply one dead-lettered event; raise (so RQ records the failure) if it cannot be."""
        result = self.applier.apply(shard, dead_id, count=1, dead_letter=True, end=dead_id)
        if result.last_id != dead_id:
            return {"shard": shard, "event": dead_id, "applied": 0, "note": "already applied"}
        if result.error:
            raise PoisonEvent(f"event {dead_id} of shard {shard} cannot be applied: {result.error}")
        if result.needs:
            if self.resolver.resolve(shard, result.needs):
                return self.apply_event(shard, dead_id)
            raise GroupNameUnavailable(f"group name for event {dead_id} not available yet")
        return {"shard": shard, "event": dead_id, "applied": result.applied}


# --- RQ job shims (enqueued by dotted path from app.jobs) --------------------------------

_SERVING: ContextVar[Drainer] = ContextVar("drainer")


@contextmanager
def serving(drainer: Drainer) -> Iterator[Drainer]:
    """Run RQ jobs in this block with `drainer` (the worker runner wraps its work loop)."""
    token = _SERVING.set(drainer)
    try:
        yield drainer
    finally:
        _SERVING.reset(token)


def _drainer() -> Drainer:
    try:
        return _SERVING.get()
    except LookupError:
        raise RuntimeError(
            "drain jobs run in `injixo-freshchat worker`, which hands them their Drainer"
        ) from None


def drain(shard: int) -> dict[str, Any]:
    """RQ job: drain one shard."""
    return _drainer().drain(shard)


def apply_event(shard: int, dead_id: str) -> dict[str, Any]:
    """RQ job: apply one dead-lettered event."""
    return _drainer().apply_event(shard, dead_id)
