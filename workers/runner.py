"""The worker process: an RQ worker serving one Drainer and one Backfiller, plus a janitor
that schedules drains nobody scheduled, the next jobs of backfills that are due, and each
shard's daily sweep of silent chats.

RQ (its worker, queue and every enqueue) uses RQ's Redis (`settings.rq_url`); the events,
flags, counts and backfill records stay in the data Redis (`settings.redis_url`). With one
Redis (RQ_REDIS_URL unset) the clients below are the same ones as before (§14)."""

from __future__ import annotations

import logging
import signal
import threading
import time

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker

from app.backfills import schedule_backfills
from app.jobs import enqueue_drain, rq_for
from app.logs import configure
from app.redis_client import data_client, rq_client
from app.redis_keys import RedisKeys
from app.settings import Settings
from workers import backfill
from workers.applier import Applier
from workers.chat_buckets import ChatBuckets
from workers.drain import Drainer, serving
from workers.sweep import sweep_due

log = logging.getLogger("injixo.worker")

RESTART_PAUSE_SECONDS = 0.2  # a loop that keeps ending must not spin a core
SWEEP_CHECK_SECONDS = 60.0  # how often the janitor asks whether a shard's daily sweep is due


def schedule_pending(
    redis: Redis, settings: Settings, force: bool = False, *, rq: Redis | None = None
) -> list[int]:
    """Enqueue a drain for every shard with pending events and no live drain (any, if forced).

    Covers a web process that died between storing and enqueueing, a drain killed
    mid-batch (its flag's lease runs out), and parked events waiting for a group name
    (each drain asks whether their names can be had now; the group resolver's backoff
    keeps that from calling Freshchat more often than it allows). The streams and flags are
    read in `redis`; the drains go to RQ's Redis `rq` (None: `app.jobs.rq_for`).
    """
    rq = rq if rq is not None else rq_for(redis, settings)
    keys = RedisKeys(settings.key_prefix)
    lease_ms = int(settings.drain_lease_seconds * 1000)
    with redis.pipeline(transaction=False) as pipe:
        for shard in range(settings.shards):
            pipe.xlen(keys.stream(shard))
            pipe.scard(keys.parked_integrations(shard))
        replies = pipe.execute()
    scheduled = []
    for shard in range(settings.shards):
        length, parked = replies[2 * shard], replies[2 * shard + 1]
        if not (length or parked):
            continue
        flag = keys.drain_flag(shard)
        if force:
            redis.set(flag, "1", px=lease_ms)
        elif not redis.set(flag, "1", nx=True, px=lease_ms):
            continue
        enqueue_drain(rq, settings, shard)
        scheduled.append(shard)
    return scheduled


def _janitor(redis: Redis, rq: Redis, settings: Settings, stop: threading.Event) -> None:
    buckets = ChatBuckets(Applier(redis, settings))
    next_sweep = 0.0
    while not stop.wait(settings.janitor_interval_seconds):
        try:
            shards = schedule_pending(redis, settings, rq=rq)
            if shards:
                log.info("janitor scheduled drains for shards %s", shards)
            if backfills := schedule_backfills(redis, settings, rq=rq):
                log.info("janitor scheduled backfill jobs for %s", backfills)
            if time.monotonic() >= next_sweep:  # a day's sweep, looked for once a minute
                next_sweep = time.monotonic() + SWEEP_CHECK_SECONDS
                sweep_due(redis, settings, buckets)
        except Exception:  # the janitor must outlive a Redis outage
            log.warning("janitor pass failed", exc_info=True)


def run_worker(settings: Settings, burst: bool = False) -> bool:
    """Work RQ jobs (burst: until nothing is pending, then return)."""
    configure(settings.log_level)
    separate = settings.rq_url != settings.redis_url

    def rq_beside(data: Redis, **timeouts: float) -> Redis:
        # With one Redis the data client serves RQ too: no more connections than before.
        return rq_client(settings, **timeouts) if separate else data

    rq = rq_client(settings, socket_connect_timeout=5)  # the RQ worker's own
    data = data_client(settings, socket_timeout=30, socket_connect_timeout=5)
    jobs_rq = rq_beside(data, socket_timeout=30, socket_connect_timeout=5)
    schedule_pending(data, settings, force=burst, rq=jobs_rq)
    schedule_backfills(data, settings, rq=jobs_rq)
    stop = threading.Event()
    if not burst:
        janitor_data = data_client(settings, socket_connect_timeout=5)
        janitor_rq = rq_beside(janitor_data, socket_connect_timeout=5)
        threading.Thread(
            target=_janitor,
            args=(janitor_data, janitor_rq, settings, stop),
            name="janitor",
            daemon=True,
        ).start()
    drainer = Drainer.build(settings, data, jobs_rq)
    backfiller = backfill.Backfiller.build(settings, data, jobs_rq)
    try:
        with serving(drainer), backfill.serving(backfiller):
            return _work(settings, rq, burst)
    finally:
        stop.set()
        drainer.close()
        backfiller.close()
        data.close()
        if separate:
            jobs_rq.close()


def _work(settings: Settings, rq: Redis, burst: bool) -> bool:
    """RQ's work loop on RQ's Redis, started again whenever it ends without a stop request."""
    # SimpleWorker runs jobs in-process: a drain job is long and cheap to restart, so a
    # fork (or spawn) per job would only add latency (the architecture note's 9 events/s).
    worked = False
    while True:
        worker: SimpleWorker | None = None
        try:
            # Building the worker already talks to Redis (CLIENT SETNAME), so it belongs
            # inside the try: Redis may go away again the moment it came back.
            worker = SimpleWorker([Queue(settings.rq_queue, connection=rq)], connection=rq)
            worked |= bool(worker.work(burst=burst, logging_level=settings.log_level))
        except (RedisConnectionError, RedisTimeoutError):  # from RQ's setup or teardown
            if burst:
                raise
        if burst or _stop_requested(worker):
            return worked
        # RQ's loop quits on any error it meets (a lost connection most often) and returns
        # as if it had been asked to: only a stop request ends this process.
        log.warning("RQ's work loop ended (lost Redis?); working again as soon as it answers")
        _wait_for_redis(rq)


def _stop_requested(worker: SimpleWorker | None) -> bool:
    """Whether SIGTERM/SIGINT asked this worker to stop (RQ records it on the worker)."""
    return worker is not None and (
        worker._shutdown_requested_date is not None or bool(worker._stop_requested)
    )


def _redis_up(redis: Redis) -> bool:
    try:
        return bool(redis.ping())
    except (RedisConnectionError, RedisTimeoutError):
        return False


def _wait_for_redis(redis: Redis) -> None:
    """Sleep until Redis answers; SIGTERM/SIGINT stop the process meanwhile (no job runs)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    time.sleep(RESTART_PAUSE_SECONDS)
    while not _redis_up(redis):
        time.sleep(0.5)
