"""RQ on its own Redis (RQ_REDIS_URL, §14): queues, jobs, workers and /rq in RQ's Redis, the
product's data in REDIS_URL's, with real web and worker processes and two redis-servers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis
from rq.registry import FailedJobRegistry
from starlette.testclient import TestClient

from app.errors import ConfigError
from app.jobs import rq_for
from app.main import create_app
from app.redis_keys import RedisKeys, text
from app.settings import Settings, load_settings
from tests.backfill_support import backfill_settings, days_ago, expected_counts, random_rows, today
from tests.e2e.processes import Process, Web
from tests.extract_standin import ExtractStandIn, running
from tests.redis_server import RedisServer, free_port
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    ENCRYPTION_KEY,
    ROOT,
    WORKED_EXAMPLE_COUNTS,
    at,
    conv_event,
    counts,
    env_for,
    make_settings,
    post_events,
    read_counts,
    shard_of,
    wait_until,
    worked_example,
)

DAY = datetime(2026, 11, 23, tzinfo=UTC)
BACKFILL_DAYS = 3


@pytest.fixture
def rq_server() -> Iterator[RedisServer]:
    """RQ's own redis-server, apart from the session's (the data Redis)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def rq_client(rq_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of RQ's Redis."""
    client = rq_server.client()
    yield client
    client.close()


def names(client: redis.Redis, pattern: str) -> set[str]:
    """The key names matching `pattern` (SCAN)."""
    return {k.decode() for k in client.scan_iter(match=pattern, count=1000)}


def create(web: Web, name: str, domain: str, freshchat_key: str = "fc-rq-key") -> tuple[str, str]:
    """An integration (no Freshchat check) and an injixo API key: (id, key)."""
    body = {
        "name": name,
        "freshchat_domain": domain,
        "freshchat_api_key": freshchat_key,
        "verify": False,
    }
    created = httpx.post(web.url + "/v1/integrations", json=body, headers=ADMIN, timeout=15)
    assert created.status_code == 201, created.text
    iid = str(created.json()["id"])
    key = httpx.post(f"{web.url}/v1/integrations/{iid}/api-keys", headers=ADMIN, timeout=15)
    assert key.status_code == 201, key.text
    return iid, str(key.json()["api_key"])


def rq_json(web: Web, path: str) -> Any:
    """A JSON page of the RQ dashboard, read with the admin token."""
    response = httpx.get(f"{web.url}/rq/0/data/{path}", headers=ADMIN, timeout=15)
    assert response.status_code == 200, response.text
    return response.json()


def integration_state(web: Web, iid: str) -> dict[str, Any]:
    """The integration as the admin API shows it (state included)."""
    response = httpx.get(f"{web.url}/v1/integrations/{iid}", headers=ADMIN, timeout=15)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def backfill_state(web: Web, iid: str, bid: str) -> dict[str, Any]:
    """One backfill's progress through the API."""
    response = httpx.get(f"{web.url}/v1/integrations/{iid}/backfills/{bid}", headers=ADMIN)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


@pytest.mark.slow
def test_rq_on_its_own_redis_with_real_processes(
    settings: Settings, r: redis.Redis, rq_server: RedisServer, rq_client: redis.Redis
) -> None:
    bs = backfill_settings(settings.redis_url, backfill_window_days=1, rq_redis_url=rq_server.url)
    env = {
        "RQ_REDIS_URL": rq_server.url,
        "BACKFILL_SUBMIT_EVERY_SECONDS": "0",
        "BACKFILL_WINDOW_DAYS": "1",
        "STUCK_AFTER_SECONDS": "1",
        "RATE_LIMIT_EVENTS_PER_SECOND": "0",
    }
    keys = RedisKeys(bs.key_prefix)
    with running() as fc:
        web = Web(bs, env)
        worker = Process(bs, "worker", extra_env=env)
        try:
            live(web, bs, r, rq_client)
            rq_state(web, bs, r, rq_client)
            dead_letter(web, bs, r, rq_client, keys)
            backfill(web, bs, r, fc)
            workers_seen(web, bs, env)
            # Nothing of RQ's in the data Redis, nothing of the product's in RQ's.
            assert names(r, "rq:*") == set()
            assert names(rq_client, "*") == names(rq_client, "rq:*") != set()
            assert names(r, f"{bs.key_prefix}:*") and not names(rq_client, f"{bs.key_prefix}:*")
            rq_down_and_back(web, bs, rq_server)
        finally:
            worker.stop()
            web.stop()
    assert "Traceback" not in web.output(), web.output()


def live(web: Web, bs: Settings, r: redis.Redis, rq_client: redis.Redis) -> None:
    """Events posted to the web process are counted by the worker (§4's worked example)."""
    iid, key = create(web, "Live", "acme.freshchat.com")
    with httpx.Client(base_url=web.url, timeout=15) as client:
        for event in worked_example():
            assert post_events(client, key, event).status_code == 202
    wait_until(lambda: read_counts(web.url, iid, DAY) == WORKED_EXAMPLE_COUNTS, 30, "the §4 counts")
    keys = RedisKeys(bs.key_prefix)
    shard = shard_of(r, bs, iid)
    assert r.type(keys.stream(shard)) == b"stream"  # the events went to the data Redis
    assert names(r, keys.counts(shard, iid, 0)[:-1] + "*")  # and so did the counts
    assert not rq_client.exists(keys.stream(shard))


def rq_state(web: Web, bs: Settings, r: redis.Redis, rq_client: redis.Redis) -> None:
    """RQ's queue and worker live in RQ's Redis, and /rq shows them."""
    queue = bs.rq_queue
    assert rq_client.sismember("rq:queues", f"rq:queue:{queue}")
    [worker_key] = [text(k) for k in rq_client.smembers(f"rq:workers:{queue}")]
    assert rq_client.exists(worker_key)  # its heartbeat key
    assert names(r, "rq:*") == set()
    page = httpx.get(web.url + "/rq/", headers=ADMIN, timeout=15)
    assert page.status_code == 200 and "RQ dashboard" in page.text
    assert queue in {q["name"] for q in rq_json(web, "queues.json")["queues"]}
    workers = rq_json(web, "workers.json")["workers"]
    assert [w["name"] for w in workers] == [worker_key.removeprefix("rq:worker:")]
    assert queue in workers[0]["queues"]


def dead_letter(
    web: Web, bs: Settings, r: redis.Redis, rq_client: redis.Redis, keys: RedisKeys
) -> None:
    """An event the apply script refuses: its `apply_event` job fails in RQ's Redis."""
    bad = orjson.dumps(["acme000000", "chat", 9, 1, "", ""])  # an unknown kind
    r.xadd(keys.stream(3), {"e": bad})  # the janitor finds it and schedules the drain
    failed = FailedJobRegistry(bs.rq_queue, connection=rq_client)
    wait_until(lambda: failed.get_job_ids(), 30, "the dead-lettered event's failed job")
    [job_id] = failed.get_job_ids()
    assert job_id.startswith("event-3-")
    assert not r.exists(f"rq:job:{job_id}") and rq_client.exists(f"rq:job:{job_id}")
    listed = rq_json(web, f"jobs/{bs.rq_queue}/failed/8/asc/1.json")["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    assert "PoisonEvent" in rq_json(web, f"job/{job_id}.json")["exc_info"]


def backfill(web: Web, bs: Settings, r: redis.Redis, fc: ExtractStandIn) -> None:
    """A backfill created through the API runs as RQ jobs to the end, counts exact."""
    rows = random_rows(
        random.Random(5), today() - timedelta(days=BACKFILL_DAYS), BACKFILL_DAYS, 300
    )
    fc.script.rows = rows
    fc.script.pending_polls = 0
    iid, _ = create(web, "History", fc.domain, fc.script.api_key)
    body = {"from": days_ago(BACKFILL_DAYS), "to": days_ago(1)}
    started = httpx.post(
        f"{web.url}/v1/integrations/{iid}/backfills", json=body, headers=ADMIN, timeout=15
    )
    assert started.status_code == 202, started.text
    bid = started.json()["backfill_id"]
    wait_until(
        lambda: backfill_state(web, iid, bid)["state"] in ("done", "failed", "cancelled"),
        60,
        "the backfill to end",
        every=0.2,
    )
    done = backfill_state(web, iid, bid)
    assert done["state"] == "done", done
    assert done["windows_done"] == BACKFILL_DAYS and done["rows_read"] == len(rows)
    shard = shard_of(r, bs, iid)
    wait_until(
        lambda: counts(r, bs, iid, shard) == expected_counts(rows), 30, "the imported counts"
    )


def workers_seen(web: Web, bs: Settings, env: dict[str, str]) -> None:
    """The state API, /metrics and the CLI find the worker (in RQ's Redis): events waiting
    for an unreachable Freshchat are stuck for that reason, not for want of a worker."""
    iid, key = create(web, "Unreachable", f"http://127.0.0.1:{free_port()}")
    events = [
        conv_event(str(uuid.uuid4()), "resolved", at("2026-11-23T08:00"), None, group_id_only="g1")
        for _ in range(3)
    ]
    with httpx.Client(base_url=web.url, timeout=15) as client:
        assert post_events(client, key, events).status_code == 202
    wait_until(
        lambda: integration_state(web, iid)["state"] == "stuck", 30, "the parked events' state"
    )
    found = integration_state(web, iid)
    assert "cannot be reached" in found["state_reason"], found
    assert "No worker" not in found["state_reason"]
    metrics = httpx.get(web.url + "/metrics", timeout=15).text
    assert "injixo_workers_alive 1.0" in metrics.splitlines()
    # The CLI holds only the data connection: it reads RQ's Redis through RQ_REDIS_URL.
    listed = subprocess.run(
        [sys.executable, "-m", "app.cli", "integrations", "list", "--json"],
        env={**os.environ, **env_for(bs), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [shown] = [i for i in json.loads(listed.stdout)["integrations"] if i["id"] == iid]
    assert shown["state"] == "stuck" and "cannot be reached" in shown["state_reason"]


def rq_down_and_back(web: Web, bs: Settings, rq_server: RedisServer) -> None:
    """With RQ's Redis down the web process stays ready and stores events (its body says
    RQ's Redis is unavailable); once it is back, every event is counted."""
    assert httpx.get(web.url + "/readyz", timeout=15).status_code == 200
    rq_server.kill()
    down = httpx.get(web.url + "/readyz", timeout=15)
    assert down.status_code == 200
    assert down.json() == {"status": "ready", "rq_redis": "unavailable"}
    iid0, key0 = create(web, "During", "during.freshchat.com")
    meanwhile = conv_event(
        str(uuid.uuid4()), "resolved", at("2026-11-23T10:00"), ("g8", "Meanwhile")
    )
    with httpx.Client(base_url=web.url, timeout=15) as client:
        assert post_events(client, key0, meanwhile).status_code == 202
    rq_server.start()
    assert httpx.get(web.url + "/readyz", timeout=15).status_code == 200
    iid, key = create(web, "After", "after.freshchat.com")
    event = conv_event(str(uuid.uuid4()), "resolved", at("2026-11-23T11:00"), ("g9", "Later"))
    with httpx.Client(base_url=web.url, timeout=15) as client:
        assert post_events(client, key, event).status_code == 202
    wait_until(
        lambda: read_counts(web.url, iid, DAY) == {("2026-11-23T11:00Z", "Later"): 1},
        60,
        "the worker to count again after RQ's Redis came back",
        every=0.2,
    )
    wait_until(
        lambda: read_counts(web.url, iid0, DAY) == {("2026-11-23T10:00Z", "Meanwhile"): 1},
        60,
        "the event stored while RQ's Redis was down to be counted",
        every=0.2,
    )


# --- in process ------------------------------------------------------------------------------


def test_readyz_says_when_rqs_redis_is_down_and_stays_ready(
    settings: Settings, rq_server: RedisServer
) -> None:
    split = make_settings(settings.redis_url, rq_redis_url=rq_server.url)
    with TestClient(create_app(split)) as client:
        assert client.app.state.rq_redis is not client.app.state.redis  # type: ignore[attr-defined]
        assert client.get("/readyz").json() == {"status": "ready"}
        rq_server.kill()
        down = client.get("/readyz")
        assert down.status_code == 200
        assert down.json() == {"status": "ready", "rq_redis": "unavailable"}
        assert client.get("/healthz").status_code == 200
        rq_server.start()
        assert client.get("/readyz").status_code == 200


def test_one_redis_when_rq_redis_url_is_unset(settings: Settings, r: redis.Redis) -> None:
    assert settings.rq_redis_url == "" and settings.rq_url == settings.redis_url
    assert rq_for(r, settings) is r  # the data client serves RQ: nothing more to connect
    with TestClient(create_app(settings)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        assert state.rq_redis is state.redis and state.ingest.rq is state.ingest.sync_redis
    same = make_settings(settings.redis_url, rq_redis_url=settings.redis_url)
    assert rq_for(r, same) is r  # RQ_REDIS_URL naming REDIS_URL's server is one Redis too


@pytest.mark.parametrize("bad", ["localhost:6379", "http://127.0.0.1:6379/0", "redis"])
def test_a_bad_rq_redis_url_is_refused_by_name(
    bad: str, monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("ENCRYPTION_KEY", ENCRYPTION_KEY)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("RQ_REDIS_URL", bad)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "RQ_REDIS_URL" in message and "redis://" in message, message
    assert "REDIS_URL:" not in message.replace("RQ_REDIS_URL", "")  # REDIS_URL itself is fine
    monkeypatch.setenv("RQ_REDIS_URL", "")
    assert load_settings().rq_url == "redis://127.0.0.1:6379/0"
