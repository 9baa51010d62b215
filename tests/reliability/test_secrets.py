"""No secret in clear text after a full run: injixo API keys, iparams values and Freshchat
API keys appear in no log line, no answer (but the one that shows a new key once) and no
Redis key or value (§2, §3, §8, §11)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.settings import Settings
from tests.freshchat_standin import FreshchatStandIn
from tests.reliability.harness import FIGURES, WATCH, create_key, processed, stack
from tests.support import (
    ADMIN,
    IPARAMS_MARKER,
    NO_OUTSIDE,
    READER,
    base_day,
    bearer,
    conv_event,
    day_ms,
    pending,
    post_events,
    read_counts,
    wait_until,
)

pytestmark = pytest.mark.reliability


@pytest.fixture
def standin() -> Iterator[FreshchatStandIn]:
    """A stand-in Freshchat that knows one key and one group."""
    server = FreshchatStandIn()
    yield server
    server.stop()


def test_no_secret_in_logs_answers_or_redis(
    settings: Settings, r: redis.Redis, standin: FreshchatStandIn
) -> None:
    rng = random.Random(11)
    base = day_ms(base_day())
    freshchat_key = f"fc-live-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    standin.script.valid_keys = {freshchat_key}
    standin.script.groups = {"g9": "Group Nine"}
    WATCH.add(freshchat_key)
    bodies: list[bytes] = []  # every answer but the one that shows a new key
    env = {"FRESHCHAT_ALLOW_INSECURE": "true", **NO_OUTSIDE}
    with stack(settings, env) as s, httpx.Client(timeout=15) as client:
        web = s.web()
        worker = s.worker()
        client.base_url = httpx.URL(web.url)

        def keep(response: httpx.Response) -> httpx.Response:
            bodies.append(response.content)
            bodies.append("\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode())
            return response

        # The Freshchat key is verified against the stand-in (a real authenticated call).
        body = {"name": "Secretive", "freshchat_domain": standin.domain}
        created = keep(
            client.post(
                "/v1/integrations", json={**body, "freshchat_api_key": freshchat_key}, headers=ADMIN
            )
        )
        assert created.status_code == 201, created.text
        iid = created.json()["id"]
        wrong = keep(
            client.post(
                "/v1/integrations",
                json={**body, "name": "Other", "freshchat_api_key": freshchat_key + "x"},
                headers=ADMIN,
            )
        )
        assert wrong.status_code == 400
        WATCH.add(freshchat_key + "x")
        bad_domain = keep(
            client.post(
                "/v1/integrations",
                json={
                    "name": "Bad",
                    "freshchat_domain": "user@evil.example.com",
                    "freshchat_api_key": freshchat_key,
                },
                headers=ADMIN,
            )
        )
        assert bad_domain.status_code == 400
        patched = keep(
            client.patch(
                f"/v1/integrations/{iid}", json={"freshchat_api_key": freshchat_key}, headers=ADMIN
            )
        )
        assert patched.status_code == 200
        keys = [create_key(web.url, iid) for _ in range(3)]
        api_keys = [k for _, k in keys]

        # Events carry secrets in iparams (the app's install parameters hold the API key).
        events = []
        for n in range(300):
            group = ("g8", "Group Eight") if n % 3 else None
            event = conv_event(
                str(uuid.UUID(int=rng.getrandbits(128))),
                "resolved",
                base + n * 60_000,
                group,
                group_id_only="g9",
            )
            event["iparams"] = {
                "injixo_api_key": api_keys[n % 3],
                "marker": IPARAMS_MARKER,
                "freshchat": freshchat_key,
            }
            events.append(event)
        for at in range(0, 300, 50):
            assert keep(post_events(client, api_keys[0], events[at : at + 50])).status_code == 202
        # Rejected requests whose bad fields hold secrets: the answers name fields, not values.
        hostile = [
            {**events[0], "timestamp": api_keys[1]},
            {**events[0], "data": freshchat_key},
            [events[1], {**events[2], "timestamp": IPARAMS_MARKER}],
            {**events[0], "event": api_keys[2], "iparams": api_keys[2]},
        ]
        for bad in hostile:
            answer = keep(post_events(client, api_keys[0], bad))
            assert answer.status_code in (202, 400)
            WATCH.saw(answer)
        keep(post_events(client, api_keys[0], api_keys[1].encode()))
        plain = {"Content-Type": "text/plain"}
        keep(post_events(client, api_keys[0], freshchat_key.encode(), **plain))
        # Revoked, wrong and misplaced credentials.
        assert (
            keep(
                client.delete(f"/v1/integrations/{iid}/api-keys/{keys[2][0]}", headers=ADMIN)
            ).status_code
            == 204
        )
        assert keep(post_events(client, api_keys[2], events[0])).status_code == 401
        keep(client.get("/v1/integrations", headers=bearer(api_keys[0])))
        keep(client.get(f"/v1/integrations/{iid}?key={api_keys[0]}", headers=READER))
        keep(client.post("/signin", data={"token": api_keys[0], "csrf": "x"}))

        wait_until(lambda: pending(r, settings) == 0, 60, "the worker to drain")
        assert processed(r, settings)[1] == 0
        assert sum(read_counts(web.url, iid).values()) == 300
        worker_listed = [q for q in standin.list_gets() if "page" in q.query]
        assert worker_listed, "the worker listed Freshchat's groups (with the key)"
        assert standin.group_gets() == []  # never the per-id route
        # What operators and admins can see.
        for path in (
            "/v1/integrations",
            f"/v1/integrations/{iid}",
            f"/v1/integrations/{iid}/api-keys",
            f"/v1/integrations/{iid}/queues",
            "/metrics",
            "/rq/",
            "/rq/queues.json",
            "/rq/workers.json",
            "/rq/jobs/injixo/1.json",
        ):
            keep(client.get(path, headers=ADMIN))
        worker.stop()
        leaks = WATCH.leaks(b"\n".join(bodies))
        assert not leaks, f"secrets in answers: {leaks}"
        found = WATCH.scan(r)
        assert not found, f"secrets found: {found}"
    # Once its processes have stopped (their logs complete, shutdown lines included): none of
    # this test's logs holds a secret. What every test left behind is scanned after each one
    # (tests/reliability/conftest.py), so this test need not run last.
    in_logs = WATCH.scan_logs(proc.log for proc in s.procs)
    assert not in_logs, in_logs
    FIGURES.record(
        "secrets",
        events=300 + len(hostile),
        secrets_watched=len(WATCH.secrets),
        logs_scanned=len(WATCH.logs),
        error_bodies_scanned=len(WATCH.error_bodies),
        leaks=0,
    )
