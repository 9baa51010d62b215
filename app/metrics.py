"""`GET /metrics` (Prometheus): the web processes' request counters plus system-wide gauges
read from Redis at scrape time (backlog, lag, processed, dead letters, Freshchat calls,
stale integrations). Labels are bounded: outcome/reason enums, shard numbers and
integration ids — never queue names, chat ids or keys.

With several uvicorn processes (WEB_CONCURRENCY > 1) the counters use prometheus-client's
multiprocess mode, so whichever process answers a scrape reports all of them."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from app.activity import read_activity
from app.integration import Integration
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from app.state import State, read_states, workers_alive

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_between_processes() -> Iterator[Path]:
    """Around uvicorn's run: one empty directory for the processes' counter files
    (prometheus-client reads the variable when each spawned process imports it). An
    operator's PROMETHEUS_MULTIPROC_DIR is used and emptied; our own is removed after."""
    given = os.environ.get(MULTIPROCESS_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="injixo-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's counts would be added to this one's
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = str(path)
    try:
        yield path
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


REGISTRY = CollectorRegistry(auto_describe=True)
EVENTS = Counter(
    "injixo_events",
    "Events received by this web instance (all its processes): accepted, ignored, or "
    "rejected (per request) by reason.",
    ["outcome", "reason"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "injixo_auth_failures",
    "Ingestion requests refused for a missing/unknown/revoked key, by integration "
    "('unknown' when the key names none).",
    ["integration"],
    registry=REGISTRY,
)


VERIFICATIONS = Counter(
    "injixo_freshchat_verifications",
    "Freshchat API-key checks made by this web instance when integrations are saved, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)


_ACCEPTED = EVENTS.labels("accepted", "")  # bound once: labels() costs a lookup per call
_IGNORED = EVENTS.labels("ignored", "")


def count_accepted(accepted: int, ignored: int) -> None:
    """Record a 202."""
    if accepted:
        _ACCEPTED.inc(accepted)
    if ignored:
        _IGNORED.inc(ignored)


def count_rejected(reason: str) -> None:
    """Record a refused request."""
    EVENTS.labels("rejected", reason).inc()


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


#: Counters the workers keep per shard in the `RedisKeys.stats` hash: field -> (metric, help).
#: A new worker-side counter is one HINCRBY on that hash where the work happens plus a
#: line here; tests/test_lua.py checks that every field the scripts count is listed.
WORKER_COUNTERS = {
    "processed": ("injixo_processed_events", "Events applied by the workers."),
    "dead": ("injixo_dead_letter_events", "Events the batch could not apply (each an RQ job)."),
}


def _stream_age(first: list[object], now_ms: int) -> float:
    if not first:
        return 0.0
    entry_id = text(first[0][0])  # type: ignore[index]
    return max(0.0, (now_ms - int(entry_id.split("-")[0])) / 1000)


async def system_families(request: Request) -> Iterator[Metric]:
    """Gauges and counters that live in Redis, read in one pipeline."""
    settings: Settings = request.app.state.settings
    redis = request.app.state.redis
    rq = request.app.state.rq_redis  # RQ's Redis: the workers' heartbeats (§14)
    keys = RedisKeys(settings.key_prefix)
    shards = range(settings.shards)
    async with redis.pipeline(transaction=False) as pipe:
        for shard in shards:
            pipe.xlen(keys.stream(shard))
            pipe.xrange(keys.stream(shard), "-", "+", count=1)
            pipe.hgetall(keys.stats(shard))
            pipe.xlen(keys.dead(shard))
        pipe.hgetall(keys.freshchat_calls())
        pipe.hvals(keys.integrations())
        replies = await pipe.execute()
    activity = await read_activity(redis, keys)
    now_ms = int(time.time() * 1000)
    backlog = GaugeMetricFamily(
        "injixo_backlog_events", "Events stored, not yet counted.", labels=["shard"]
    )
    age = GaugeMetricFamily(
        "injixo_backlog_oldest_age_seconds",
        "Age of the oldest pending event (processing lag).",
        labels=["shard"],
    )
    worker = {
        field: CounterMetricFamily(name, help_text, labels=["shard"])
        for field, (name, help_text) in WORKER_COUNTERS.items()
    }
    dead_now = GaugeMetricFamily(
        "injixo_dead_letter_pending", "Dead-lettered events not yet applied.", labels=["shard"]
    )
    for shard in shards:
        length, first, stats, dead = replies[shard * 4 : shard * 4 + 4]
        label = [str(shard)]
        backlog.add_metric(label, int(length))
        age.add_metric(label, _stream_age(first, now_ms))
        counters = {text(k): int(v) for k, v in stats.items()}
        for field, family in worker.items():
            family.add_metric(label, counters.get(field, 0))
        dead_now.add_metric(label, int(dead))
    calls = CounterMetricFamily(
        "injixo_freshchat_requests",
        "Freshchat group lookups by the workers, by outcome.",
        labels=["outcome"],
    )
    for outcome, n in sorted((text(k), int(v)) for k, v in replies[-2].items()):
        calls.add_metric([outcome], n)
    stale = GaugeMetricFamily(
        "injixo_integration_stale",
        "1 when an active integration needs a look: stuck, app uninstalled, auth failing, stale.",
        labels=["integration"],
    )
    last = GaugeMetricFamily(
        "injixo_integration_last_event_timestamp_seconds",
        "When an event was last accepted for the integration (unix time; 10 s resolution).",
        labels=["integration"],
    )
    by_state = GaugeMetricFamily(
        "injixo_integrations", "Active integrations by state (§8).", labels=["state"]
    )
    state_of = GaugeMetricFamily(
        "injixo_integration_state",
        "1 for the state an active integration is in (stuck, app_uninstalled, ...).",
        labels=["integration", "state"],
    )
    pending_of = GaugeMetricFamily(
        "injixo_integration_pending_events",
        "The integration's events stored, not yet counted (waiting for a group name included).",
        labels=["integration"],
    )
    active = [i for i in map(Integration.load, replies[-1]) if i.active]
    states = await read_states(redis, keys, settings, active, rq)
    tally = dict.fromkeys((s.value for s in State if s is not State.DELETED), 0)
    for integration in active:
        act = activity.get(integration.id)
        now_state = states[integration.id]
        stale.add_metric([integration.id], 1.0 if now_state.stale else 0.0)
        state_of.add_metric([integration.id, now_state.state.value], 1.0)
        pending_of.add_metric([integration.id], now_state.pending)
        tally[now_state.state.value] += 1
        if act and act.last_event_at:
            last.add_metric([integration.id], act.last_event_at)
    for name, n in tally.items():
        by_state.add_metric([name], n)
    alive = GaugeMetricFamily(
        "injixo_workers_alive", "RQ workers serving the product's queue (heartbeat alive)."
    )
    alive.add_metric([], await workers_alive(redis, settings, rq))
    families = [backlog, age, *worker.values(), dead_now, calls, stale, last]
    return iter([*families, by_state, state_of, pending_of, alive])


def _process_counters() -> bytes:
    if not os.environ.get(MULTIPROCESS_ENV):
        return generate_latest(REGISTRY)
    merged = CollectorRegistry()
    MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped upstream
    return generate_latest(merged)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(list(await system_families(request))))
    body = _process_counters() + generate_latest(snapshot)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
