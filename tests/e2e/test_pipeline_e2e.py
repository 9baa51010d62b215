"""Whole system: HTTP client -> web process -> Redis -> worker process -> read API."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from app.settings import Settings
from tests.e2e.processes import Process, Web
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    G1,
    G2,
    IPARAMS_MARKER,
    WORKED_EXAMPLE_COUNTS,
    at,
    conv_event,
    expected_counts,
    pending,
    post_events,
    random_history,
    read_counts,
    wait_until,
    worked_example,
)

pytestmark = pytest.mark.e2e
FRESHCHAT_KEY = "fc-SECRET-e2e-5b1d"
DAY = datetime(2026, 11, 23, tzinfo=UTC)


def setup_integration(web: Web) -> tuple[str, str]:
    created = httpx.post(
        web.url + "/v1/integrations",
        json={
            "name": "Acme",
            "freshchat_domain": "acme.freshchat.com",
            "freshchat_api_key": "k",
            "verify": False,
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    iid = created.json()["id"]
    key = httpx.post(f"{web.url}/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_key"]
    return iid, key


def test_worked_example_over_http(settings: Settings, r: redis.Redis) -> None:
    web = Web(settings)
    worker = Process(settings, "worker")
    try:
        iid, key = setup_integration(web)
        deliveries = worked_example()
        with httpx.Client(base_url=web.url) as client:
            # Singles, then the same events again as one batch: duplicates change nothing.
            for event in deliveries:
                assert post_events(client, key, event).status_code == 202
            again = post_events(client, key, deliveries[::-1])
            assert again.json() == {"accepted": len(deliveries), "ignored": 0}
        wait_until(
            lambda: read_counts(web.url, iid, DAY) == WORKED_EXAMPLE_COUNTS, 30, "the §4 counts"
        )
        wait_until(lambda: pending(r, settings) == 0, 10, "an empty backlog")
        assert read_counts(web.url, iid, DAY) == WORKED_EXAMPLE_COUNTS
    finally:
        worker.stop()
        web.stop()
    # Structured logs: one JSON line per request and per batch, and never a secret.
    web_lines = [orjson.loads(line) for line in web.output().splitlines() if line.startswith("{")]
    requests = [
        x for x in web_lines if x["msg"] == "request" and x["path"] == "/v1/freshchat/events"
    ]
    assert len(requests) == len(deliveries) + 1 and all(x["status"] == 202 for x in requests)
    assert {x.get("integration") for x in requests} == {iid}
    worker_lines = [
        orjson.loads(line) for line in worker.output().splitlines() if line.startswith("{")
    ]
    assert sum(x.get("applied", 0) for x in worker_lines if x["msg"] == "batch") == 2 * len(
        deliveries
    )
    for output in (web.output(), worker.output()):
        for secret in (key, FRESHCHAT_KEY, IPARAMS_MARKER, ADMIN_TOKEN):
            assert secret not in output


@pytest.mark.slow
def test_worker_sigkill_mid_drain_then_restart(settings: Settings, r: redis.Redis) -> None:
    settings = settings.model_copy(update={"drain_batch": 100})
    extra = {"DRAIN_BATCH": "100"}
    web = Web(settings, extra)
    try:
        iid, key = setup_integration(web)
        rng = random.Random(7)
        histories = [
            random_history(
                rng,
                str(uuid.UUID(int=rng.getrandbits(128))),
                at("2026-11-23T08:00"),
                groups=[G1, G2, None],
                within_s=8 * 3600,
                step_ms=60_000,
            )
            for _ in range(6000)
        ]
        events = [e for h in histories for e in h]
        rng.shuffle(events)
        batches = [events[i : i + 400] for i in range(0, len(events), 400)]
        with (
            httpx.Client(base_url=web.url, timeout=30) as c,
            ThreadPoolExecutor(8) as pool,
        ):
            codes = list(pool.map(lambda b: post_events(c, key, b).status_code, batches))
        assert set(codes) == {202}
        total = pending(r, settings)
        assert total == len(events)
        worker = Process(settings, "worker", extra_env=extra)
        wait_until(lambda: pending(r, settings) < total * 0.8, 60, "the drain to start", every=0.02)
        worker.kill()
        left = pending(r, settings)
        assert 0 < left < total, "the kill should land mid-drain"
        worker = Process(settings, "worker", extra_env=extra)
        try:
            wait_until(
                lambda: pending(r, settings) == 0, 90, "the restarted worker to drain the rest"
            )
        finally:
            worker.stop()
        assert read_counts(web.url, iid, DAY) == expected_counts(histories)
    finally:
        web.stop()


def _accepted_counter(text: str) -> float:
    for line in text.splitlines():
        if line.startswith('injixo_events_total{outcome="accepted"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_every_web_process(
    settings: Settings, r: redis.Redis, tmp_path: Path
) -> None:
    """With WEB_CONCURRENCY=2 each scrape reaches one process, yet the request counters
    must cover both (Prometheus multiprocess mode); the counter files go when it stops."""
    web = Web(settings, {"WEB_CONCURRENCY": "2", "TMPDIR": str(tmp_path)})
    try:
        _, key = setup_integration(web)
        sent = 60

        def post(i: int) -> int:
            event = conv_event(f"mp-{i}", "resolved", at("2026-11-23T08:00"), ("g1", "Billing"))
            with httpx.Client(base_url=web.url) as client:
                return post_events(client, key, event).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(post, range(sent))) == {202}
        for _ in range(10):
            with httpx.Client() as client:  # a new connection: either process may answer
                scraped = client.get(web.url + "/metrics", headers=ADMIN)
            assert scraped.status_code == 200
            assert _accepted_counter(scraped.text) == sent
        assert list(tmp_path.glob("injixo-metrics-*/*.db"))
    finally:
        assert web.stop() == 0
    assert "Traceback" not in web.output()
    assert not list(tmp_path.glob("injixo-metrics-*"))
