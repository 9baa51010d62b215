"""An integration whose events cannot be counted says so (`stuck`, with its cause and the
fix, §8), loses nothing, is counted once after the fix, and costs the others nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet
from starlette.testclient import TestClient

from app.main import create_app
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.freshchat_standin import FreshchatStandIn, running
from tests.redis_server import RedisServer, free_port
from tests.support import (
    ADMIN,
    apply_all,
    at,
    conv_event,
    counts,
    make_settings,
    post_events,
    shard_of,
    waiting,
)
from workers.drain import Drainer

GOOD, ROTATED = "fc-good-key", "fc-rotated-key"
T = at("2026-11-23T08:07")
CHATS = 30


@pytest.fixture
def settings(redis_server: RedisServer, r: redis.Redis) -> Settings:
    # Group listings (§5) at most once a second, so that a test need not wait a minute.
    return make_settings(
        redis_server.url,
        freshchat_allow_insecure=True,
        stuck_after_seconds=1,
        group_list_every_seconds=1.0,
    )


@pytest.fixture
def fc() -> Iterator[FreshchatStandIn]:
    with running() as standin:
        standin.script.valid_keys = {GOOD}
        standin.script.groups = {"g1": "Customer Support"}
        yield standin


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def integration(
    client: TestClient, domain: str, fc_key: str, name: str = "Acme"
) -> tuple[str, str]:
    body = {"name": name, "freshchat_domain": domain, "freshchat_api_key": fc_key, "verify": False}
    created = client.post("/v1/integrations", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    iid = created.json()["id"]
    key = client.post(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_key"]
    return iid, key


def send_waiting_chats(client: TestClient, key: str) -> None:
    """CHATS solved chats naming only group g1 (its name must come from Freshchat), twice."""
    events = [
        conv_event(f"{n:08d}-0000-4000-8000-000000000000", "resolved", T, None, group_id_only="g1")
        for n in range(CHATS)
    ]
    assert post_events(client, key, events + events).status_code == 202


def state(client: TestClient, iid: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/integrations/{iid}", headers=ADMIN).json())


def drain(r: redis.Redis, settings: Settings, shard: int) -> None:
    drainer = Drainer.build(settings, r)
    try:
        drainer.drain(shard)
    finally:
        drainer.close()


def a_worker_runs(r: redis.Redis, settings: Settings) -> None:
    """Register a live RQ worker (its heartbeat key), as `injixo-freshchat worker` does."""
    r.sadd(f"rq:workers:{settings.rq_queue}", "rq:worker:test")
    r.set("rq:worker:test", "1", ex=60)


def stuck_then_fixed(
    client: TestClient, r: redis.Redis, settings: Settings, iid: str, key: str
) -> dict[str, Any]:
    """Send, let the drain fail to name the group, wait past STUCK_AFTER_SECONDS: the state."""
    shard = shard_of(r, settings, iid)
    send_waiting_chats(client, key)
    drain(r, settings, shard)
    keys = RedisKeys(settings.key_prefix)
    assert waiting(r, keys, shard) == 2 * CHATS  # nothing lost, nothing guessed
    assert counts(r, settings, iid, shard) == {}
    assert state(client, iid)["state"] != "stuck"  # not yet: waiting is not stuck
    time.sleep(1.2)
    found = state(client, iid)
    assert found["state"] == "stuck" and found["stale"] is True
    assert found["pending_events"] == 2 * CHATS
    return found


def counted_once(client: TestClient, r: redis.Redis, settings: Settings, iid: str) -> None:
    shard = shard_of(r, settings, iid)
    drain(r, settings, shard)
    assert counts(r, settings, iid, shard) == {("2026-11-23T08:00Z", "Customer Support"): CHATS}
    assert waiting(r, RedisKeys(settings.key_prefix), shard) == 0
    after = state(client, iid)
    assert after["state"] == "receiving" and after["pending_events"] == 0


def test_freshchat_rejects_the_stored_key(
    client: TestClient, r: redis.Redis, settings: Settings, fc: FreshchatStandIn
) -> None:
    a_worker_runs(r, settings)
    iid, key = integration(client, fc.domain, ROTATED)
    found = stuck_then_fixed(client, r, settings, iid, key)
    assert "rejects the stored API key" in found["state_reason"]
    assert "Freshchat API key" in found["state_fix"]
    assert fc.list_gets() and fc.group_gets() == []  # the group list, never the per-id route
    fixed = {"freshchat_api_key": GOOD, "verify": False}
    assert client.patch(f"/v1/integrations/{iid}", json=fixed, headers=ADMIN).status_code == 200
    counted_once(client, r, settings, iid)


def test_freshchat_forbids_the_stored_key(
    client: TestClient, r: redis.Redis, settings: Settings, fc: FreshchatStandIn
) -> None:
    a_worker_runs(r, settings)
    fc.fail_always(403)
    iid, key = integration(client, fc.domain, GOOD)
    found = stuck_then_fixed(client, r, settings, iid, key)
    assert "rejects the stored API key" in found["state_reason"]
    fc.recover()
    fc.script.valid_keys = {"fc-new-key"}  # the old key stays refused: only the edit helps
    fixed = {"freshchat_api_key": "fc-new-key", "verify": False}
    assert client.patch(f"/v1/integrations/{iid}", json=fixed, headers=ADMIN).status_code == 200
    counted_once(client, r, settings, iid)
    assert fc.list_gets()[-1].authorization == "Bearer fc-new-key"


def test_freshchat_unreachable(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    a_worker_runs(r, settings)
    port = free_port()
    iid, key = integration(client, f"http://127.0.0.1:{port}", GOOD)
    found = stuck_then_fixed(client, r, settings, iid, key)
    assert "cannot be reached" in found["state_reason"]
    assert "network_error" in found["state_reason"]
    with running(port) as standin:  # Freshchat answers again
        standin.script.valid_keys = {GOOD}
        standin.script.groups = {"g1": "Customer Support"}
        time.sleep(1.1)  # the first backoff
        counted_once(client, r, settings, iid)


def test_key_encrypted_under_another_encryption_key(
    redis_server: RedisServer, r: redis.Redis, settings: Settings, fc: FreshchatStandIn
) -> None:
    a_worker_runs(r, settings)
    other = settings.model_copy(update={"encryption_key": Fernet.generate_key().decode()})
    with TestClient(create_app(other)) as old:  # saved by a deployment with another key
        iid, key = integration(old, fc.domain, GOOD)
    with TestClient(create_app(settings)) as client:
        found = stuck_then_fixed(client, r, settings, iid, key)
        assert "cannot be decrypted" in found["state_reason"]
        assert "ENCRYPTION_KEY" in found["state_fix"]
        again = {"freshchat_api_key": GOOD, "verify": False}
        assert client.patch(f"/v1/integrations/{iid}", json=again, headers=ADMIN).status_code == 200
        counted_once(client, r, settings, iid)


def test_no_worker_running(
    client: TestClient, r: redis.Redis, settings: Settings, fc: FreshchatStandIn
) -> None:
    iid, key = integration(client, fc.domain, GOOD)
    shard = shard_of(r, settings, iid)
    chat = str(uuid.uuid4())
    event = conv_event(chat, "resolved", T, ("g1", "Customer Support"))
    assert post_events(client, key, event).status_code == 202
    time.sleep(1.2)
    found = state(client, iid)
    assert found["state"] == "stuck" and "No worker is running" in found["state_reason"]
    assert "injixo-freshchat worker" in found["state_fix"]
    metrics = client.get("/metrics").text
    assert f'injixo_integration_state{{integration="{iid}",state="stuck"}} 1.0' in metrics
    assert 'injixo_integrations{state="stuck"} 1.0' in metrics
    assert "injixo_workers_alive 0.0" in metrics
    drain(r, settings, shard)  # a worker starts
    assert counts(r, settings, iid, shard) == {("2026-11-23T08:00Z", "Customer Support"): 1}
    assert state(client, iid)["state"] == "receiving"


def test_waiting_events_cost_the_other_integrations_nothing(
    client: TestClient,
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fc.fail_always(503)
    stuck, stuck_key = integration(client, fc.domain, GOOD, "Stuck")
    shard = shard_of(r, settings, stuck)
    other, other_key = "", ""
    for n in range(200):  # another integration on the same shard
        other, other_key = integration(client, fc.domain, GOOD, f"Other {n}")
        if shard_of(r, settings, other) == shard:
            break
    assert shard_of(r, settings, other) == shard
    for _ in range(20):
        send_waiting_chats(client, stuck_key)
    drain(r, settings, shard)
    keys = RedisKeys(settings.key_prefix)
    assert r.xlen(keys.parked(shard, stuck)) == 20 * 2 * CHATS
    assert r.xlen(keys.stream(shard)) == 0
    # While Freshchat still fails, draining the other's event never reads the parked ones.
    read: list[str] = []
    drainer = Drainer.build(settings, r)
    real_apply = drainer.applier.apply

    def spy(shard: int, start: str = "-", **kw: Any) -> Any:
        read.append(kw.get("parked", ""))
        return real_apply(shard, start, **kw)

    monkeypatch.setattr(drainer.applier, "apply", spy)
    assert (
        post_events(client, other_key, conv_event("x", "resolved", T, ("g9", "Sales"))).status_code
        == 202
    )
    drainer.drain(shard)
    drainer.close()
    assert counts(r, settings, other, shard) == {("2026-11-23T08:00Z", "Sales"): 1}
    assert read and stuck not in read  # the stuck integration's parked events were not read
    # Once Freshchat answers, the parked events are counted, each chat once.
    fc.recover()
    r.delete(keys.group_backoff(shard, stuck), keys.group_list_next(shard, stuck))
    apply_all(r, settings, shard)  # names not known yet: they stay parked
    assert r.xlen(keys.parked(shard, stuck)) == 20 * 2 * CHATS
    drain(r, settings, shard)
    assert counts(r, settings, stuck, shard) == {("2026-11-23T08:00Z", "Customer Support"): CHATS}
    assert r.xlen(keys.parked(shard, stuck)) == 0
    assert not r.smembers(keys.parked_integrations(shard))
