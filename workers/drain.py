"""The Drainer: applies a shard's pending events in batches (`drain`) and re-applies one
dead-lettered event so that a failure is visible and requeueable in RQ (`apply_event`).

Its dependencies are handed in: the worker runner builds one per process, tests and the
bench build their own. Events and counts are in the data Redis (`redis`); the follow-up
jobs it enqueues go to RQ's (`rq`, RQ_REDIS_URL; the same client when RQ shares it). RQ
calls the module-level shims at the bottom, which use the Drainer the running worker
installed (`serving`).
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from redis import Redis

from app.jobs import enqueue_apply_event, enqueue_drain, rq_for
from app.lua import CONVERSATION_NEED
from app.redis_keys import text
from app.settings import Settings
from workers.applier import Applier
from workers.chat_buckets import ChatBuckets
from workers.groups import GroupResolver, usable
from workers.serving import Served

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
    rq: Redis  # RQ's Redis, where follow-up jobs are enqueued

    @classmethod
    def build(cls, settings: Settings, redis: Redis, rq: Redis | None = None) -> Drainer:
        """The usual wiring: applier and resolver on `redis`, jobs on `rq` (None: rq_for)."""
        return cls(
            settings,
            redis,
            Applier(redis, settings),
            GroupResolver(redis, settings),
            rq if rq is not None else rq_for(redis, settings),
        )

    @cached_property
    def buckets(self) -> ChatBuckets:
        """The shard's chat buckets outside a batch (assignments, old state moved in)."""
        return ChatBuckets(self.applier)

    def close(self) -> None:
        """Close the resolver's HTTP client (the Redis connection is the caller's)."""
        self.resolver.client.close()

    def drain(self, shard: int) -> dict[str, Any]:
        """Apply the shard's pending events until none are left or the time budget is spent.

        Events that wait for a group name are parked per integration by the apply script;
        a parked integration's events are applied again (one batch between two of the
        shard's) only once one of the names it waits for is known, so a stuck integration
        costs the others nothing however many of its events wait.
        """
        began = time.monotonic()
        self.applier.hold(shard)
        self.buckets.migrate_legacy(shard)  # once: state from before chat buckets
        start, applied, batches, dead = "-", 0, 0, 0
        ready = {iid: "-" for iid in self._parked_ready(shard)}
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
                enqueue_apply_event(self.rq, self.settings, shard, dead_id)
            dead += len(result.dead_ids)
            if result.needs and self.resolver.resolve(shard, result.needs):
                # Names learnt: the events that waited for them were parked meanwhile.
                for iid, _ in result.needs:
                    ready[iid] = "-"
            applied += self._parked_batch(shard, ready)
            if result.last_id:
                start = "(" + result.last_id
            elif not ready and not self.applier.release(shard, start):
                break
            if time.monotonic() - began > self.settings.drain_time_budget_seconds:
                # Keep the flag; let other jobs run first.
                enqueue_drain(self.rq, self.settings, shard)
                break
        summary = {"shard": shard, "applied": applied, "batches": batches, "dead_lettered": dead}
        log.info("drain done", extra=summary)
        return summary

    def _parked_ready(self, shard: int) -> list[str]:
        """Parked integrations that can make progress: a name they wait for is known now
        (from an event, or Freshchat answered), a chat they wait for has its assignment
        (`"@<chat>"` waits, §12), or their set of waits needs rebuilding."""
        rk = self.applier.redis_keys
        ready = []
        now = self.resolver.clock()
        for raw in self.redis.smembers(rk.parked_integrations(shard)):
            iid = text(raw)
            waits = [text(g) for g in self.redis.smembers(rk.parked_groups(shard, iid))]
            if not waits:
                ready.append(iid)
                continue
            gids = [w for w in waits if not w.startswith(CONVERSATION_NEED)]
            chats = [w[len(CONVERSATION_NEED) :] for w in waits if w.startswith(CONVERSATION_NEED)]
            named = bool(gids) and any(
                usable(v, now) for v in self.redis.hmget(rk.groups(shard, iid), gids)
            )
            assigned = any(self.buckets.assigned(shard, iid, chats))
            if named or assigned or self.resolver.resolve(shard, [(iid, w) for w in waits]):
                ready.append(iid)
        return ready

    def _parked_batch(self, shard: int, ready: dict[str, str]) -> int:
        """Apply one batch of the first ready parked integration; the events applied."""
        if not ready:
            return 0
        iid, cursor = next(iter(ready.items()))
        result = self.applier.apply(shard, cursor, parked=iid)
        if result.needs and self.resolver.resolve(shard, result.needs):
            ready[iid] = "-"  # learnt a name on the way: go over its parked events again
            return result.applied
        if result.last_id:
            ready[iid] = "(" + result.last_id
        else:
            del ready[iid]  # the whole parking stream was read
        return result.applied

    def apply_event(self, shard: int, dead_id: str) -> dict[str, Any]:
        """Apply one dead-lettered event; raise (so RQ records the failure) if it cannot be."""
        self.buckets.migrate_legacy(shard)
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

_SERVED: Served[Drainer] = Served(
    "drainer", "drain jobs run in `injixo-freshchat worker`, which hands them their Drainer"
)


def serving(drainer: Drainer) -> AbstractContextManager[Drainer]:
    """Run RQ jobs in this block with `drainer` (the worker runner wraps its work loop)."""
    return _SERVED.serving(drainer)


def drain(shard: int) -> dict[str, Any]:
    """RQ job: drain one shard."""
    return _SERVED.get().drain(shard)


def apply_event(shard: int, dead_id: str) -> dict[str, Any]:
    """RQ job: apply one dead-lettered event."""
    return _SERVED.get().apply_event(shard, dead_id)
