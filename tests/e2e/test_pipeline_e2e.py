"""Whole system: HTTP client -> web process -> Redis -> worker process -> read API."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.e2e.processes import Process, Web, wait_for
from tests.factories import ADMIN_TOKEN, IPARAMS_MARKER, READER_TOKEN, at, conv_event
from tests.test_apply import WORKED_EXAMPLE_COUNTS, worked_example

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FRESHCHAT_KEY = "fc-SECRET-e2e-5b1d"
READER = {"Authorization": f"Bearer {READER_TOKEN}"}


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


def read_rows(web: Web, iid: str, day: str = "2026-11-23") -> dict[tuple[str, str], int]:
    response = httpx.get(
        f"{web.url}/v1/integrations/{iid}/contacts",
        params={"from": f"{day}T00:00:00Z", "to": f"{day}T23:45:00Z"},
        headers=READER,
    )
    assert response.status_code == 200, response.text
    return {
        (r["interval_start"][:16] + "Z", r["queue"]): r["contacts"] for r in response.json()["rows"]
    }


def pending(r: redis.Redis, settings: Settings) -> int:
    keys = RedisKeys(settings.key_prefix)
    return sum(r.xlen(keys.stream(s)) for s in range(settings.shards))


def test_worked_example_over_http(settings: Settings, r: redis.Redis) -> None:
    web = Web(settings)
    worker = Process(settings, "worker")
    try:
        iid, key = setup_integration(web)
        auth = {"Authorization": f"Bearer {key}"}
        deliveries = worked_example()
        with httpx.Client(base_url=web.url, headers=auth) as client:
            # Singles, then the same events again as one batch: duplicates change nothing.
            for event in deliveries:
                assert client.post("/v1/freshchat/events", json=event).status_code == 202
            again = client.post("/v1/freshchat/events", json=deliveries[::-1])
            assert again.json() == {"accepted": len(deliveries), "ignored": 0}
        wait_for(lambda: read_rows(web, iid) == WORKED_EXAMPLE_COUNTS, 30, "the §4 counts")
        wait_for(lambda: pending(r, settings) == 0, 10, "an empty backlog")
        assert read_rows(web, iid) == WORKED_EXAMPLE_COUNTS
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


def random_history(rng: random.Random, chat: str) -> list[dict[str, Any]]:
    groups = [("g1", "Customer Support"), ("g2", "Billing"), None]
    base = at("2026-11-23T08:00") + rng.randrange(0, 8 * 3600) * 1000
    events = [conv_event(chat, "new", base, rng.choice(groups), event="onConversationCreate")]
    for step in range(rng.randrange(1, 4)):
        status = rng.choice(["assigned", "resolved", "resolved", "reopened", "spam"])
        events.append(conv_event(chat, status, base + (step + 1) * 60_000, rng.choice(groups)))
    return events


def expected_counts(histories: list[list[dict[str, Any]]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for events in histories:
        terminal = []
        for e in events:
            status = e["data"]["conversation"]["status"]
            if status in ("resolved", "spam"):
                group = e["data"]["associations"].get("group")
                queue = group["name"] if status == "resolved" and group else "Undefined_Queue"
                terminal.append((e["timestamp"], queue))
        if terminal:
            when, queue = min(terminal)
            slot = when - when % 900_000
            from tests.factories import iso

            k = (iso(slot)[:16] + "Z", queue)
            out[k] = out.get(k, 0) + 1
    return out


@pytest.mark.slow
def test_worker_sigkill_mid_drain_then_restart(settings: Settings, r: redis.Redis) -> None:
    settings = settings.model_copy(update={"drain_batch": 100})
    extra = {"DRAIN_BATCH": "100"}
    web = Web(settings, extra)
    try:
        iid, key = setup_integration(web)
        rng = random.Random(7)
        histories = [
            random_history(rng, str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(6000)
        ]
        events = [e for h in histories for e in h]
        rng.shuffle(events)
        batches = [events[i : i + 400] for i in range(0, len(events), 400)]
        with (
            httpx.Client(
                base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as c,
            ThreadPoolExecutor(8) as pool,
        ):
            codes = list(
                pool.map(lambda b: c.post("/v1/freshchat/events", json=b).status_code, batches)
            )
        assert set(codes) == {202}
        total = pending(r, settings)
        assert total == len(events)
        worker = Process(settings, "worker", extra_env=extra)
        wait_for(lambda: pending(r, settings) < total * 0.8, 60, "the drain to start")
        worker.kill()
        left = pending(r, settings)
        assert 0 < left < total, "the kill should land mid-drain"
        worker = Process(settings, "worker", extra_env=extra)
        try:
            wait_for(
                lambda: pending(r, settings) == 0, 90, "the restarted worker to drain the rest"
            )
        finally:
            worker.stop()
        assert read_rows(web, iid) == expected_counts(histories)
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
            with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
                return client.post(web.url + "/v1/freshchat/events", json=event).status_code

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
