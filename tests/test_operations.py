"""Operations (§8): /rq dashboard, /metrics exactness, /readyz, stale integrations."""

from __future__ import annotations

import base64
import gc
import re
import time
from typing import Any

import orjson
import pytest
import redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry
from starlette.testclient import TestClient

from app.main import GC_THRESHOLDS, create_app
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.freshchat_standin import running
from tests.page_support import sign_in
from tests.redis_server import RedisServer
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    at,
    conv_event,
    create_integration,
    fixture,
    make_settings,
    pending,
    post_events,
)
from workers.drain import Drainer, serving
from workers.runner import schedule_pending


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name:
            got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if got == want:
                return float(match.group(3))
    return 0.0


def total(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.fixture
def worker_env(settings: Settings) -> Settings:
    """The settings the in-process worker runs with."""
    return settings


def burst(r: redis.Redis, settings: Settings) -> None:
    """Drain everything in-process with a real RQ SimpleWorker serving a Drainer."""
    schedule_pending(r, settings, force=True)
    drainer = Drainer.build(settings, r)
    try:
        with serving(drainer):
            SimpleWorker([Queue(settings.rq_queue, connection=r)], connection=r).work(burst=True)
    finally:
        drainer.close()


def test_metrics_move_by_exact_amounts(
    client: TestClient, r: redis.Redis, worker_env: Settings
) -> None:
    settings = worker_env
    iid, key = create_integration(client)
    before = client.get("/metrics").text
    events = [
        conv_event(f"c{i}", "resolved", at("2026-11-23T08:00") + i, ("g1", "S")) for i in range(7)
    ]
    assert post_events(client, key, events + [fixture("message_create")] * 2).status_code == 202
    assert post_events(client, key, b"{").status_code == 400
    assert post_events(client, key, b"x", **{"Content-Type": "text/plain"}).status_code == 415
    assert post_events(client, "nope", events[0]).status_code == 401
    [meta] = client.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    client.delete(f"/v1/integrations/{iid}/api-keys/{meta['key_id']}", headers=ADMIN)
    assert post_events(client, key, events[0]).status_code == 401
    time.sleep(0.1)  # the auth-failure record is written off the request path
    mid = client.get("/metrics").text

    def delta(name: str, text: str = mid, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    assert delta("injixo_events_total", outcome="accepted", reason="") == 7
    assert delta("injixo_events_total", outcome="ignored", reason="") == 2
    assert delta("injixo_events_total", outcome="rejected", reason="invalid") == 1
    assert delta("injixo_events_total", outcome="rejected", reason="unsupported_media_type") == 1
    assert delta("injixo_events_total", outcome="rejected", reason="unauthorized") == 2
    assert delta("injixo_auth_failures_total", integration="unknown") == 1
    assert delta("injixo_auth_failures_total", integration=iid) == 1
    assert total(mid, "injixo_backlog_events") == 7
    assert total(mid, "injixo_backlog_oldest_age_seconds") < 60
    assert total(mid, "injixo_processed_events_total") == 0
    listed = client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()
    assert listed["auth_failures"] == 1 and listed["last_event_at"] is not None

    keys = RedisKeys(settings.key_prefix)
    r.xadd(keys.stream(0), {"e": b"poison"})
    burst(r, settings)
    after = client.get("/metrics").text
    assert total(after, "injixo_backlog_events") == 0
    assert total(after, "injixo_backlog_oldest_age_seconds") == 0
    assert total(after, "injixo_processed_events_total") == 7
    assert total(after, "injixo_dead_letter_events_total") == 1
    assert total(after, "injixo_dead_letter_pending") == 1


def test_rq_dashboard_needs_admin_token_and_shows_a_requeueable_failed_event(
    client: TestClient, r: redis.Redis, worker_env: Settings
) -> None:
    settings = worker_env
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + base64.b64encode(b"a:wrong").decode()},
    ):
        assert client.get("/rq/", headers=headers).status_code == 401
    assert client.get("/rq/0/data/queues.json").status_code == 401
    failed_event_job(r, settings)
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()}
    page = client.get("/rq/", headers=basic)
    assert page.status_code == 200 and "RQ dashboard" in page.text
    queues = client.get("/rq/0/data/queues.json", headers=ADMIN).json()["queues"]
    assert {q["name"]: q["count"] for q in queues}.get(settings.rq_queue) == 0
    failed = client.get(
        f"/rq/0/data/jobs/{settings.rq_queue}/failed/8/asc/1.json", headers=ADMIN
    ).json()
    [job] = failed["jobs"]
    assert "apply_event" in job["description"] or "dead-lettered" in job["description"]
    info: dict[str, Any] = client.get(f"/rq/0/data/job/{job['id']}.json", headers=ADMIN).json()
    assert "PoisonEvent" in info["exc_info"] and "bad kind" in info["exc_info"]
    requeued = client.post(f"/rq/job/{job['id']}/requeue", headers=ADMIN)  # a script: no origin
    assert requeued.status_code == 200
    assert Queue(settings.rq_queue, connection=r).job_ids == [job["id"]]


def failed_event_job(r: redis.Redis, settings: Settings) -> str:
    """An event the apply script refuses, dead-lettered into a failed `apply_event` job."""
    keys = RedisKeys(settings.key_prefix)
    r.xadd(keys.stream(3), {"e": orjson.dumps(["acme000000", "chat", 9, 1, "", ""])})
    burst(r, settings)
    [job_id] = FailedJobRegistry(settings.rq_queue, connection=r).get_job_ids()
    return job_id


def test_rq_changes_state_only_from_its_own_pages_or_a_script(
    client: TestClient, r: redis.Redis, worker_env: Settings
) -> None:
    settings = worker_env
    job_id = failed_event_job(r, settings)
    failed = FailedJobRegistry(settings.rq_queue, connection=r)
    queue = settings.rq_queue
    basic = {"Authorization": "Basic " + base64.b64encode(f"a:{ADMIN_TOKEN}".encode()).decode()}
    # What a browser attaches by itself (the session cookie, cached Basic credentials)
    # does not let another page change anything: cross-site, same-site (another port of
    # this host), a foreign Origin or Referer, or a browser request naming no origin.
    elsewhere = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {},
    ]
    sign_in(client)
    for credentials in ({}, basic):
        for origin in elsewhere:
            headers = {**credentials, **origin}
            for method, path in (
                ("POST", f"/rq/queue/{queue}/failed/empty"),
                ("POST", f"/rq/job/{job_id}/requeue"),
                ("POST", f"/rq/job/{job_id}/delete"),
                ("GET", f"/rq/requeue/{queue}"),  # rq-dashboard's "requeue all" takes GET too
            ):
                refused = client.request(method, path, headers=headers)
                assert refused.status_code == 403, (method, path, headers)
                assert refused.json()["reason"] == "cross_site"
            # Reading stays open to the same credentials.
            assert client.get("/rq/0/data/queues.json", headers=headers).status_code == 200
    assert failed.get_job_ids() == [job_id]
    # A Bearer token is never attached by a browser, but a cross-site page still cannot
    # send one in a request that also says it is cross-site.
    cross_bearer = {**ADMIN, "Sec-Fetch-Site": "cross-site"}
    assert client.post(f"/rq/job/{job_id}/requeue", headers=cross_bearer).status_code == 403
    # The dashboard's own pages: the browser says same-origin.
    same = client.post(f"/rq/job/{job_id}/requeue", headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200 and same.json() == {"status": "OK"}
    assert Queue(queue, connection=r).job_ids == [job_id] and failed.get_job_ids() == []
    own = {"Origin": "http://testserver", "Referer": "http://testserver/rq/"}
    assert client.post(f"/rq/queue/{queue}/queued/empty", headers=own).status_code == 200
    assert Queue(queue, connection=r).job_ids == []
    # Unauthenticated stays 401 whatever the origin.
    client.cookies.clear()
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    assert client.post(f"/rq/job/{job_id}/requeue", headers=same_origin).status_code == 401


def test_readyz_follows_redis() -> None:
    server = RedisServer()
    try:
        with TestClient(create_app(make_settings(server.url))) as client:
            assert client.get("/readyz").status_code == 200
            assert client.get("/healthz").status_code == 200
            server.kill()
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
            server.start()
            assert client.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_stale_integration_is_flagged(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    quiet, _ = create_integration(client, "Quiet")
    busy, key = create_integration(client, "Busy")
    assert post_events(client, key, fixture("conversation_create")).status_code == 202
    time.sleep(0.1)
    keys = RedisKeys(settings.key_prefix)
    record = orjson.loads(r.hget(keys.integrations(), quiet) or b"{}")
    record["created_at"] -= settings.stale_after_seconds + 60  # created long ago, never sent
    r.hset(keys.integrations(), quiet, orjson.dumps(record))
    text = client.get("/metrics").text
    assert metric(text, "injixo_integration_stale", integration=quiet) == 1
    assert metric(text, "injixo_integration_stale", integration=busy) == 0
    listed = {
        i["id"]: i for i in client.get("/v1/integrations", headers=ADMIN).json()["integrations"]
    }
    assert listed[quiet]["stale"] is True and listed[busy]["stale"] is False
    # Only auth failures since the last accepted event, for a while: stale too.
    now = int(time.time())
    r.hset(keys.last_event(), busy, now - 3600)
    r.hset(keys.auth_failure_at(), busy, now - 10)
    assert client.get(f"/v1/integrations/{busy}", headers=ADMIN).json()["stale"] is True


def test_openapi_describes_every_public_endpoint(client: TestClient) -> None:
    from starlette.routing import Route

    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (route.path, method)
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        and route.path.startswith(("/v1/", "/healthz", "/readyz", "/metrics"))
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert served == documented
    event = doc["components"]["schemas"]["ConversationEvent"]
    assert "timestamp" in event["required"] and "iparams" not in event["properties"]
    created = doc["paths"]["/v1/integrations"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IntegrationOut"
    }


def test_freshchat_lookups_are_counted_in_metrics(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    settings = make_settings(redis_server.url, freshchat_allow_insecure=True)
    with running() as standin, TestClient(create_app(settings)) as client:
        # Three pages of Freshchat's group list (50 a page): one request, counted, per page.
        standin.script.groups = {f"q{n}": f"Queue {n}" for n in range(120)} | {"g5": "Sales"}
        body = {
            "name": "Acme",
            "freshchat_domain": standin.domain,
            "freshchat_api_key": "fc-good-key",
        }
        created = client.post("/v1/integrations", json=body, headers=ADMIN)
        assert created.status_code == 201
        before = client.get("/metrics").text
        iid = created.json()["id"]
        key = client.post(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_key"]
        events = [
            conv_event(f"c{i}", "resolved", at("2026-11-23T08:00"), None, group_id_only=gid)
            for i, gid in enumerate(["g5", "g5", "g404", "g5"])
        ]
        assert post_events(client, key, events).status_code == 202
        burst(r, settings)
        after = client.get("/metrics").text
        # One listing named g5 and found g404 absent: three requests, all answered.
        assert metric(after, "injixo_freshchat_requests_total", outcome="ok") == 3
        assert metric(after, "injixo_freshchat_requests_total", outcome="not_found") == 0
        assert metric(before, "injixo_freshchat_verifications_total", outcome="ok") >= 1
        key_check, *listing = standin.list_gets()  # the key check on save, then the worker's
        assert key_check.query == {"items_per_page": ["1"]}
        assert [q.query["page"] for q in listing] == [["1"], ["2"], ["3"]]
        assert standin.group_gets() == []


def test_rate_limit_answers_429_with_retry_after(redis_server: RedisServer, r: redis.Redis) -> None:
    settings = make_settings(redis_server.url, rate_limit_events_per_second=2, rate_limit_burst=5)
    with TestClient(create_app(settings)) as client:
        _, key_a = create_integration(client, "A")
        _, key_b = create_integration(client, "B")
        events = [conv_event(f"c{i}", "new", at("2026-11-23T08:00")) for i in range(4)]
        assert post_events(client, key_a, events).status_code == 202
        limited = post_events(client, key_a, events)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["reason"] == "rate_limited"
        assert post_events(client, key_b, events).status_code == 202  # per integration
        assert pending(r, settings) == 8  # nothing of the 429
        time.sleep(1.6)
        assert post_events(client, key_a, events[:3]).status_code == 202


def test_the_web_process_collects_garbage_rarely(client: TestClient) -> None:
    """The lifespan tunes the collector once (batch bodies make many short-lived objects)."""
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
