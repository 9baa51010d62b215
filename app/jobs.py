"""Enqueueing the RQ jobs the workers run (by dotted path: `app` never imports `workers`)."""

from __future__ import annotations

import uuid

from redis import Redis
from rq import Queue

from app.settings import Settings

DRAIN = "workers.drain.drain"
APPLY_EVENT = "workers.drain.apply_event"
DRAIN_TIMEOUT_S = 300


def enqueue_drain(redis: Redis, settings: Settings, shard: int) -> str:
    """Queue a drain of one shard's stream; returns the job id."""
    job = Queue(settings.rq_queue, connection=redis).enqueue(
        DRAIN,
        shard,
        job_id=f"drain-{shard}-{uuid.uuid4().hex[:12]}",
        job_timeout=DRAIN_TIMEOUT_S,
        result_ttl=60,
        failure_ttl=7 * 86400,
        description=f"drain shard {shard}",
    )
    return str(job.id)


def enqueue_apply_event(redis: Redis, settings: Settings, shard: int, dead_id: str) -> str:
    """Queue one dead-lettered event as its own job, so a failure shows in RQ's registry."""
    job = Queue(settings.rq_queue, connection=redis).enqueue(
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


def enqueue_backfill(
    redis: Redis, settings: Settings, integration_id: str, backfill_id: str
) -> str:
    """Queue the next steps of a backfill (§13); returns the job id (visible in /rq)."""
    job = Queue(settings.rq_queue, connection=redis).enqueue(
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
