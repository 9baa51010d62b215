"""The naive baseline of §10: one synchronous `queue.enqueue` per request, one RQ job per
event (the bare endpoint is `bench.bare`).

Run with uvicorn exactly like the real app (one process, same flags):
    python -m uvicorn bench.baselines:naive_app ...     (BENCH_REDIS_URL names the Redis)
The naive worker runs `naive_job` on RQ.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

import orjson
from redis import Redis
from rq import Queue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.compact import Compact, Kind
from app.errors import AppError
from app.events import parse_body, to_compacts
from app.ingest import EVENTS_PATH
from app.lua import UNDEFINED_QUEUE
from app.redis_keys import text

MAX_EVENTS = 500
FUTURE_TOLERANCE_S = 86_400
CHAT_TTL_MS = 90 * 86_400_000
NAIVE_QUEUE = "naive"
NAIVE_IID = "naive"


def _validate(body: bytes) -> tuple[list[Compact], int]:
    """What the naive baseline does to a body: the product's parse and validation."""
    events = parse_body(body, MAX_EVENTS)
    return to_compacts(events, int(time.time() * 1000), FUTURE_TOLERANCE_S)


def _error(exc: AppError) -> Response:
    return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type="application/json")


def _accepted(accepted: int, ignored: int) -> Response:
    body = orjson.dumps({"accepted": accepted, "ignored": ignored})
    return Response(body, status_code=202, media_type="application/json")


@cache
def _queue() -> Queue:
    redis = Redis.from_url(os.environ["BENCH_REDIS_URL"], socket_timeout=5)
    return Queue(NAIVE_QUEUE, connection=redis)


async def naive(request: Request) -> Response:
    """Parse and validate, then one synchronous `Queue.enqueue` per request (the naive design)."""
    body = await request.body()
    try:
        compacts, ignored = _validate(body)
    except AppError as exc:
        return _error(exc)
    if compacts:
        payload: dict[str, Any] = orjson.loads(body)
        payload.pop("iparams", None)
        _queue().enqueue(naive_job, payload)  # blocks the event loop: that is the point
    return _accepted(len(compacts), ignored)


naive_app = Starlette(routes=[Route(EVENTS_PATH, naive, methods=["POST"])])


@cache
def _job_redis() -> Redis:
    return Redis.from_url(os.environ["BENCH_REDIS_URL"], socket_timeout=30)


def _slot_key(iid: str, time_ms: int, queue: str) -> tuple[str, str]:
    slot = time_ms // 900_000
    day = slot // 96
    return f"naive:n:{iid}:{day}", f"{slot - day * 96}:{queue}"


def naive_job(payload: dict[str, Any]) -> int:
    """§4 for one event with plain commands: validate, dedupe on chat state, move the count.

    Not atomic (that is one of the naive design's problems), but not slowed down either:
    the same model code and the fewest round trips a straightforward job would make.
    """
    redis = _job_redis()
    events = parse_body(orjson.dumps(payload), 1)
    compacts, _ = to_compacts(events, int(time.time() * 1000), FUTURE_TOLERANCE_S)
    applied = 0
    for c in compacts:
        ckey = f"naive:c:{NAIVE_IID}:{c.chat}"
        groups = f"naive:g:{NAIVE_IID}"
        if c.group_id and c.group_name:
            redis.hset(groups, c.group_id, c.group_name)
        if c.kind == Kind.OTHER:
            redis.pexpire(ckey, CHAT_TTL_MS)
            continue
        queue = UNDEFINED_QUEUE
        if c.kind == Kind.SOLVED:
            if c.group_name:
                queue = c.group_name
            elif c.group_id:
                known = redis.hget(groups, c.group_id)
                queue = text(known) if known else UNDEFINED_QUEUE
        current = redis.get(ckey)
        if current is not None:
            t_text, _, q_old = text(current).partition("|")
            if (int(t_text), q_old) <= (c.time_ms, queue):
                redis.pexpire(ckey, CHAT_TTL_MS)
                continue
            key, field = _slot_key(NAIVE_IID, int(t_text), q_old)
            redis.hincrby(key, field, -1)
        redis.set(ckey, f"{c.time_ms}|{queue}", px=CHAT_TTL_MS)
        key, field = _slot_key(NAIVE_IID, c.time_ms, queue)
        redis.hincrby(key, field, 1)
        applied += 1
    return applied


def naive_total(redis: Redis) -> int:
    """Contacts the naive jobs counted (a check that they did the work)."""
    total = 0
    for key in redis.scan_iter("naive:n:*", count=1000):
        total += sum(int(v) for v in redis.hvals(key))
    return total
