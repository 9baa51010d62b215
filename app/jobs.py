"""Enqueueing the RQ jobs the workers run (by dotted path: `app` never imports `workers`).

RQ lives in `settings.rq_url` (RQ_REDIS_URL, else REDIS_URL; §14): every function here
takes RQ's connection (`rq`), never the data one, though the two are the same client
when RQ shares the data Redis.
"""

from __future__ import annotations

import threading
import uuid

from redis import Redis
from rq import Queue

from app.redis_client import rq_client
from app.settings import Settings

DRAIN = "workers.drain.drain"
APPLY_EVENT = "workers.drain.apply_event"
DRAIN_TIMEOUT_S = 300

_SHARED: dict[str, Redis] = {}
_SHARED_LOCK = threading.Lock()


def rq_for(redis: Redis, settings: Settings) -> Redis:
    """RQ's connection for code handed only the data one (that client if RQ shares it)."""
    if settings.rq_url == settings.redis_url:
        return redis
    # Shared, not one per call: the API builds a Backfills per request (redis-py's pool is
    # thread-safe and re-creates its connections after a fork).
    with _SHARED_LOCK:
        client = _SHARED.get(settings.rq_url)
        if client is None:
            client = rq_client(settings, socket_timeout=30, socket_connect_timeout=5)
            _SHARED[settings.rq_url] = client
        return client


def enqueue_drain(rq: Redis, settings: Settings, shard: int) -> str:
    """Queue a drain of one shard's stream; returns the job id."""
    job = Queue(settings.rq_queue, connection=rq).enqueue(
        DRAIN,
        shard,
        job_id=f"drain-{shard}-{uuid.uuid4().hex[:12]}",
        job_timeout=DRAIN_TIMEOUT_S,
        result_ttl=60,
        failure_ttl=7 * 86400,
        description=f"drain shard {shard}",
    )
    return str(job.id)


def enqueue_apply_event(rq: Redis, settings: Settings, shard: int, dead_id: str) -> str:
    """Queue one dead-lettered event as its own job, so a failure shows in RQ's registry."""
    job = Queue(settings.rq_queue, connection=rq).enqueue(
        APPLY_EVENT,
        shard,
        dead_id,
        job_id=f"event-{shard}-{dead_id}",
        job_timeout=60,
        result_ttl=86400,
        failure_ttl=30 * 86400,
        description=f"apply dead-lettered event {dead_id} of shard {shard}",
    )
    return str(job.id)


BACKFILL = "workers.backfill.run_backfill"
BACKFILL_TIMEOUT_S = 3600  # one job does a step or a few; a longer one is surely stuck


def enqueue_backfill(rq: Redis, settings: Settings, integration_id: str, backfill_id: str) -> str:
    """Queue the next steps of a backfill (§13); returns the job id (visible in /rq)."""
    job = Queue(settings.rq_queue, connection=rq).enqueue(
        BACKFILL,
        integration_id,
        backfill_id,
        job_id=f"backfill-{backfill_id}-{uuid.uuid4().hex[:8]}",
        job_timeout=BACKFILL_TIMEOUT_S,
        result_ttl=3600,
        failure_ttl=7 * 86400,
        description=f"backfill {backfill_id} of integration {integration_id}",
    )
    return str(job.id)
