"""The RQ jobs: `drain(shard)` applies a shard's pending events in batches; `apply_event`
re-applies one dead-lettered event so that a failure is visible (and requeueable) in RQ."""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

from redis import Redis

from app.freshchat import observe
from app.jobs import enqueue_apply_event, enqueue_drain, rq_connection
from app.redis_keys import RedisKeys
from app.settings import Settings, load_settings
from workers.applier import Applier
from workers.groups import GroupResolver

log = logging.getLogger("injixo.drain")


class PoisonEvent(Exception):
    """A stored event that the apply script refuses."""


class GroupNameUnavailable(Exception):
    """Freshchat could not name the event's group yet; requeue later."""


_call_counter: list[tuple[Redis, str]] = []


def _count_call(operation: str, outcome: str) -> None:
    # Workers are separate processes: the count lives in Redis, and /metrics reads it.
    if operation == "group":
        for redis, key in _call_counter:
            redis.hincrby(key, outcome, 1)


observe(_count_call)


@cache
def _context() -> tuple[Settings, Redis, Applier, GroupResolver]:
    settings = load_settings()
    redis = rq_connection(settings.redis_url, socket_timeout=30, socket_connect_timeout=5)
    _call_counter[:] = [(redis, RedisKeys(settings.key_prefix).freshchat_calls())]
    return settings, redis, Applier(redis, settings), GroupResolver(redis, settings)


def drain(shard: int) -> dict[str, Any]:
    """Apply the shard's pending events until none are left or the time budget is spent."""
    settings, redis, applier, resolver = _context()
    began = time.monotonic()
    start, applied, batches, dead = "-", 0, 0, 0
    while True:
        applier.hold(shard)
        t0 = time.perf_counter()
        result = applier.apply(shard, start)
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
            enqueue_apply_event(redis, settings, shard, dead_id)
        dead += len(result.dead_ids)
        if result.needs and resolver.resolve(shard, result.needs):
            start = "-"  # names learnt: go back for the entries that waited for them
            continue
        if result.last_id:
            start = "(" + result.last_id
        elif not applier.release(shard, start):
            break
        if time.monotonic() - began > settings.drain_time_budget_seconds:
            enqueue_drain(redis, settings, shard)  # keep the flag; let other jobs run first
            break
    summary = {"shard": shard, "applied": applied, "batches": batches, "dead_lettered": dead}
    log.info("drain done", extra=summary)
    return summary


def apply_event(shard: int, dead_id: str) -> dict[str, Any]:
    """Apply one dead-lettered event; raise (so RQ records the failure) if it cannot be."""
    _, _, applier, resolver = _context()
    result = applier.apply(shard, dead_id, count=1, dead_letter=True, end=dead_id)
    if result.last_id != dead_id:
        return {"shard": shard, "event": dead_id, "applied": 0, "note": "already applied"}
    if result.error:
        raise PoisonEvent(f"event {dead_id} of shard {shard} cannot be applied: {result.error}")
    if result.needs:
        if resolver.resolve(shard, result.needs):
            return apply_event(shard, dead_id)
        raise GroupNameUnavailable(f"group name for event {dead_id} not available yet")
    return {"shard": shard, "event": dead_id, "applied": result.applied}
