"""Enqueueing the RQ jobs the workers run (by dotted path: `app` never imports `workers`)."""

from __future__ import annotations

import os
import uuid
from typing import Any

from redis import Redis
from rq import Queue

from app.scripts import EMBEDDED_ENV
from app.settings import Settings

DRAIN = "workers.drain.drain"
APPLY_EVENT = "workers.drain.apply_event"
DRAIN_TIMEOUT_S = 300


def rq_connection(url: str, **options: Any) -> Redis:
    """A sync client for RQ. On the embedded dev server (fakeredis, which closes the
    connection after any error reply) RQ's INFO probe would fail, so its cached answer
    is set up front; on a real Redis nothing changes."""
    client = Redis.from_url(url, **options)
    if os.environ.get(EMBEDDED_ENV) == "1":
        setattr(client, "__rq_redis_server_version", (7, 0, 0))
    return client


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
