"""Isolation between integrations, revocation on every web process at once, admin surfaces
behind the admin token, and constant-time token comparison (§11)."""

from __future__ import annotations

import ast
import hmac
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.routing import Mount, Route

from app.auth import token_matches
from app.main import create_app
from app.settings import Settings
from app.webhooks import WEBHOOK_PATH
from tests.e2e.processes import Process
from tests.reliability.harness import FIGURES, WATCH, create_integration, create_key, stack
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    EVENTS,
    READER,
    READER_TOKEN,
    ROOT,
    base_day,
    bearer,
    conv_event,
    day_ms,
    iso,
    read_counts,
)

pytestmark = pytest.mark.reliability

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/signin", "/signout", "/static"}


def test_keys_are_bound_to_their_integration_and_cannot_read(
    settings: Settings, r: redis.Redis
) -> None:
    rng = random.Random(8)
    base = day_ms(base_day())
    refused = 0
    with stack(settings) as s:
        one, two = s.web(), s.web()
        a = create_integration(one.url, "Isolated A", f"fc-a-{uuid.uuid4().hex}", "a.freshchat.com")
        b = create_integration(one.url, "Isolated B", f"fc-b-{uuid.uuid4().hex}", "b.freshchat.com")
        _, key_a = create_key(one.url, a)
        key_b_id, key_b = create_key(one.url, b)
        # A's key sends events that claim to be B's (domain, account); they land in A only.
        when = base + 10 * 3600 * 1000
        events = []
        for n in range(40):
            event = conv_event(str(uuid.UUID(int=rng.getrandbits(128))), "resolved", when, None)
            event["domain"], event["account_id"] = "b.freshchat.com", "account-of-b"
            event["data"]["conversation"]["app_id"] = f"b-{n}"
            events.append(event)
        for web, half in ((one, events[:20]), (two, events[20:])):
            answer = httpx.post(web.url + EVENTS, json=half, headers=bearer(key_a))
            assert answer.status_code == 202 and answer.json()["accepted"] == 20
        burst = Process(settings, "worker", "--burst")
        WATCH.logs.append(burst.log)
        assert burst.proc.wait(timeout=60) == 0, burst.output()
        slot = iso(when - when % 900_000)[:16] + "Z"
        assert read_counts(one.url, a) == {(slot, "Undefined_Queue"): 40}
        assert read_counts(one.url, b) == {}

        # RedisKeys cannot read, list or administer anything: neither their own data nor others'.
        day = base_day().strftime("%Y-%m-%dT%H:%M:%SZ")
        for key in (key_a, key_b):
            for iid in (a, b):
                for path in (
                    f"/v1/integrations/{iid}/contacts?from={day}&to={day}",
                    f"/v1/integrations/{iid}/queues",
                    f"/v1/integrations/{iid}",
                    f"/v1/integrations/{iid}/api-keys",
                ):
                    answer = httpx.get(one.url + path, headers=bearer(key))
                    WATCH.saw(answer)
                    assert answer.status_code == 401, (path, answer.status_code)
                    assert iid not in answer.text and "Isolated" not in answer.text
                    refused += 1
            answer = httpx.get(one.url + "/v1/integrations", headers=bearer(key))
            assert answer.status_code == 401
            refused += 1
        # Reader and admin tokens are not API keys.
        for token in (READER_TOKEN, ADMIN_TOKEN):
            answer = httpx.post(one.url + EVENTS, json=events[0], headers=bearer(token))
            WATCH.saw(answer)
            assert answer.status_code == 401
            refused += 1

        # Revocation: both processes have B's key cached; revoked on one, refused on both
        # at once, with the same answer as an unknown key.
        for web in (one, two):
            cached = httpx.post(web.url + EVENTS, json=events[0], headers=bearer(key_b))
            assert cached.status_code == 202
        gone = httpx.delete(f"{two.url}/v1/integrations/{b}/api-keys/{key_b_id}", headers=ADMIN)
        assert gone.status_code == 204
        unknown = httpx.post(one.url + EVENTS, json=events[0], headers=bearer("ijx_0_" + "x" * 43))
        for web in (one, two):
            answer = httpx.post(web.url + EVENTS, json=events[0], headers=bearer(key_b))
            WATCH.saw(answer)
            assert answer.status_code == 401
            assert answer.json() == unknown.json()
            assert answer.headers["www-authenticate"] == "Bearer"
            refused += 1
        # Deleting an integration stops its other keys too, on every process.
        assert httpx.delete(f"{one.url}/v1/integrations/{a}", headers=ADMIN).status_code == 204
        for web in (one, two):
            answer = httpx.post(web.url + EVENTS, json=events[1], headers=bearer(key_a))
            assert answer.status_code == 401
            refused += 1
        assert read_counts(two.url, a) == {(slot, "Undefined_Queue"): 40}  # counts stay
        assert not WATCH.scan(r)
    FIGURES.record("isolation", events=44, refused_requests=refused)


def _admin_requests(app_routes: list[Any], iid: str, key_id: str) -> list[tuple[str, str]]:
    """(method, path) for every route that is not public, with real ids filled in."""
    out = []
    for route in app_routes:
        if isinstance(route, Mount):
            if route.path in PUBLIC:
                continue
            out += [("GET", route.path + "/"), ("GET", route.path + "/queues.json")]
            continue
        assert isinstance(route, Route)
        if route.path in PUBLIC or route.path in (EVENTS, WEBHOOK_PATH + "{webhook_id}"):
            continue  # the ingestion endpoints (an API key; Freshchat's signature): own tests
        path = route.path.replace("{iid}", iid).replace("{key_id}", key_id)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                out.append((method, path))
    return out


def test_every_admin_surface_needs_the_admin_token(settings: Settings, r: redis.Redis) -> None:
    with stack(settings) as s:
        web = s.web()
        iid = create_integration(web.url, "Guarded", f"fc-guarded-{uuid.uuid4().hex}")
        key_id, key = create_key(web.url, iid)
        surfaces = _admin_requests(create_app(settings).routes, iid, key_id)
        assert len(surfaces) >= 15, surfaces
        readers = {f"/v1/integrations/{iid}/{name}" for name in ("contacts", "queues", "changes")}
        checked = 0
        with httpx.Client(base_url=web.url, timeout=15, follow_redirects=False) as client:
            for method, path in surfaces:
                candidates: list[dict[str, str]] = [
                    {},
                    bearer("wrong-token-0123456789"),
                    bearer(key),
                    bearer(ADMIN_TOKEN + "x"),
                    bearer(ADMIN_TOKEN[:-1]),
                    {"Authorization": "Basic " + "dXNlcjp3cm9uZw=="},
                    {"Cookie": "ijx_admin_session=forged.0.abc"},
                ]
                if path not in readers:
                    candidates.append(READER)
                for headers in candidates:
                    answer = client.request(method, path, headers=headers)
                    WATCH.saw(answer)
                    checked += 1
                    if path.startswith("/account") or path == "/":
                        # Pages: a redirect to sign-in (or a refused form post), no data.
                        assert answer.status_code in (303, 401, 403), (method, path, headers)
                        if answer.status_code == 303:
                            assert answer.headers["location"].startswith(("/signin", "/account"))
                        assert "Guarded" not in answer.text
                    else:
                        assert answer.status_code == 401, (method, path, headers, answer.text)
                        assert iid not in answer.text
            # The same surfaces work with the admin token (so the refusals above mean something).
            assert client.get("/v1/integrations", headers=ADMIN).status_code == 200
            assert client.get("/rq/", headers=ADMIN).status_code == 200
        assert httpx.get(web.url + "/v1/integrations", headers=ADMIN).json()["integrations"]
    FIGURES.record("admin_surfaces", surfaces=len(surfaces), refused_requests=checked)


def test_token_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every allowed token is compared with hmac.compare_digest, with no early exit; timing
    itself is not measured (too noisy to be a test)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module app.auth calls it through
    allowed = ("first-token-0123456789", "second-token-012345678", "third-token-0123456789")
    for candidate, expected in [
        ("first-token-0123456789", True),
        ("third-token-0123456789", True),
        ("nope", False),
        ("", False),
        ("é-not-ascii", False),
    ]:
        calls.clear()
        assert token_matches(candidate, allowed) is expected
        assert [b for _, b in calls] == [t.encode() for t in allowed]  # all, in order
    calls.clear()
    assert token_matches(None, allowed) is False
    assert calls == []
    # No token or secret is compared with == / != anywhere in the app.
    for source in sorted((ROOT / "app").glob("*.py")):
        tree = ast.parse(Path(source).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                names = ast.unparse(node).lower()
                assert not any(
                    word in names for word in ("admin_token", "api_key ==", "secret ==", "csrf ==")
                ), f"{source.name}:{node.lineno}: {ast.unparse(node)}"
