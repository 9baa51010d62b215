"""The Freshchat client against a stand-in Freshchat on loopback: key verification (§2),
group lookups and Retry-After parsing (§5), and verification through the admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import httpx2
import pytest
import redis
from starlette.testclient import TestClient

from app import freshchat
from app.errors import AppError, BadRequest, FreshchatUnreachable, UpstreamError
from app.freshchat import OUTCOMES, fetch_group, parse_retry_after, verify_api_key
from app.main import create_app
from tests.freshchat_standin import FreshchatStandIn, refused_domain, running
from tests.redis_server import RedisServer
from tests.support import ADMIN, make_settings

GOOD, BAD = "fc-good-key", "fc-wrong-KEY-98765"


@pytest.fixture
def fc() -> Iterator[FreshchatStandIn]:
    with running() as standin:
        standin.script.valid_keys = {GOOD}
        standin.script.groups = {"g1": "Customer Support", "g 2/x": "Billing | EU 🌍"}
        yield standin


def verify(domain: str, key: str, timeout: float = 2.0) -> None:
    asyncio.run(verify_api_key(domain, key, httpx.Timeout(timeout)))


def failure(domain: str, key: str, timeout: float = 2.0) -> AppError:
    with pytest.raises(AppError) as caught:
        verify(domain, key, timeout)
    return caught.value


# Key verification (§2).


def test_verify_accepts_a_good_key_with_one_bearer_call(fc: FreshchatStandIn) -> None:
    verify(fc.domain, GOOD)
    [request] = fc.requests
    assert (request.method, request.path) == ("GET", "/v2/groups")
    assert request.query == {"items_per_page": ["1"]}
    assert request.authorization == f"Bearer {GOOD}"


def test_verify_rejected_401(fc: FreshchatStandIn) -> None:
    error = failure(fc.domain, BAD)
    assert type(error) is UpstreamError and error.status == 400
    assert "Freshchat rejected the API key" in error.message
    assert BAD not in str(error) and BAD not in repr(error.body())
    assert [q.authorization for q in fc.requests] == [f"Bearer {BAD}"]


def test_verify_rejected_403(fc: FreshchatStandIn) -> None:
    fc.fail_next(403)
    error = failure(fc.domain, GOOD)
    assert type(error) is UpstreamError and error.status == 400
    assert "rejected" in error.message and GOOD not in error.message


def test_verify_connection_refused() -> None:
    domain = refused_domain()
    error = failure(domain, GOOD)
    assert isinstance(error, FreshchatUnreachable) and error.status == 502
    assert "could not reach Freshchat" in error.message and domain in error.message
    assert GOOD not in error.message


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_verify_server_errors_are_unreachable(fc: FreshchatStandIn, status: int) -> None:
    fc.fail_next(status, retry_after="5")
    error = failure(fc.domain, GOOD)
    assert isinstance(error, FreshchatUnreachable) and error.status == 502
    assert f"HTTP {status}" in error.message and GOOD not in error.message
    assert len(fc.requests) == 1


def test_verify_slow_freshchat_times_out(fc: FreshchatStandIn) -> None:
    fc.slow(5.0)
    began = time.monotonic()
    error = failure(fc.domain, GOOD, timeout=0.3)
    assert time.monotonic() - began < 2.0
    assert isinstance(error, FreshchatUnreachable) and "timed out" in error.message
    assert GOOD not in error.message


def test_verify_refuses_a_key_that_cannot_be_a_header(fc: FreshchatStandIn) -> None:
    for key in ("two words", "line\nbreak", "ünïcode"):
        with pytest.raises(BadRequest) as caught:
            verify(fc.domain, key)
        assert key not in caught.value.message
    assert fc.requests == []


def test_verify_does_not_follow_redirects(fc: FreshchatStandIn) -> None:
    fc.fail_next(302)
    error = failure(fc.domain, GOOD)
    assert isinstance(error, FreshchatUnreachable)
    assert len(fc.requests) == 1


# Group lookups (§5).


def test_fetch_group_outcomes(fc: FreshchatStandIn) -> None:
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        hit = fetch_group(client, fc.domain, GOOD, "g1")
        odd = fetch_group(client, fc.domain, GOOD, "g 2/x")
        missing = fetch_group(client, fc.domain, GOOD, "nope")
        rejected = fetch_group(client, fc.domain, BAD, "g1")
        fc.fail_next(429, retry_after="17")
        limited = fetch_group(client, fc.domain, GOOD, "g1")
        fc.fail_next(503)
        failed = fetch_group(client, fc.domain, GOOD, "g1")
        refused = fetch_group(client, refused_domain(), GOOD, "g1")
    assert hit == freshchat.GroupAnswer(name="Customer Support", status=200)
    assert odd.name == "Billing | EU 🌍"
    assert missing.missing and missing.outcome == "not_found" and missing.name is None
    assert rejected.outcome == "unauthorized" and not rejected.missing
    assert (limited.outcome, limited.retry_after) == ("rate_limited", 17.0)
    assert (failed.outcome, failed.retry_after, failed.name) == ("server_error", None, None)
    assert refused.outcome == "network_error"
    outcomes = [a.outcome for a in (hit, odd, missing, rejected, limited, failed, refused)]
    assert outcomes == [
        "ok",
        "ok",
        "not_found",
        "unauthorized",
        "rate_limited",
        "server_error",
        "network_error",
    ]
    assert set(outcomes) <= set(OUTCOMES)
    paths = [q.path for q in fc.group_gets()]
    assert paths[:3] == ["/v2/groups/g1", "/v2/groups/g%202%2Fx", "/v2/groups/nope"]
    assert all(q.authorization == f"Bearer {GOOD}" for q in fc.requests if q.path != paths[3])


def test_fetch_group_bad_response(fc: FreshchatStandIn) -> None:
    fc.script.groups["empty"] = ""
    fc.script.groups["nul"] = "\0\0Sales"
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        assert fetch_group(client, fc.domain, GOOD, "empty").outcome == "bad_response"
        assert fetch_group(client, fc.domain, GOOD, "nul").name == "Sales"


def test_fetch_group_slow_is_a_network_error(fc: FreshchatStandIn) -> None:
    fc.slow(5.0)
    with httpx.Client(timeout=httpx.Timeout(0.2)) as client:
        answer = fetch_group(client, fc.domain, GOOD, "g1")
    assert answer.outcome == "network_error" and answer.name is None and not answer.missing


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    for junk in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(junk) is None


# Through the admin API (POST /v1/integrations with "verify": true).


@pytest.fixture
def api(redis_server: RedisServer, r: redis.Redis) -> Iterator[TestClient]:
    settings = make_settings(redis_server.url, freshchat_allow_insecure=True)
    with TestClient(create_app(settings)) as client:
        yield client


def create(api: TestClient, domain: str, key: str) -> httpx2.Response:
    body = {"name": "Acme", "freshchat_domain": domain, "freshchat_api_key": key, "verify": True}
    return api.post("/v1/integrations", json=body, headers=ADMIN)


def test_api_saves_a_verified_key(api: TestClient, fc: FreshchatStandIn) -> None:
    response = create(api, fc.domain, GOOD)
    assert response.status_code == 201, response.text
    assert response.json()["freshchat_domain"] == fc.domain
    assert GOOD not in response.text
    assert [q.authorization for q in fc.requests] == [f"Bearer {GOOD}"]
    listed = api.get("/v1/integrations", headers=ADMIN).json()["integrations"]
    assert [i["id"] for i in listed] == [response.json()["id"]]


def test_api_refuses_a_rejected_key(api: TestClient, fc: FreshchatStandIn) -> None:
    response = create(api, fc.domain, BAD)
    assert response.status_code == 400
    assert "rejected" in response.json()["error"] and BAD not in response.text
    assert [q.authorization for q in fc.requests] == [f"Bearer {BAD}"]
    assert api.get("/v1/integrations", headers=ADMIN).json()["integrations"] == []


def test_api_reports_freshchat_down(api: TestClient, fc: FreshchatStandIn) -> None:
    response = create(api, refused_domain(), GOOD)
    assert response.status_code == 502
    assert "could not reach Freshchat" in response.json()["error"] and GOOD not in response.text
    fc.fail_next(500)
    response = create(api, fc.domain, GOOD)
    assert response.status_code == 502 and "could not reach Freshchat" in response.text
    assert len(fc.requests) == 1
    assert api.get("/v1/integrations", headers=ADMIN).json()["integrations"] == []


def test_api_skip_verify_makes_no_call(api: TestClient, fc: FreshchatStandIn) -> None:
    body = {"name": "Acme", "freshchat_domain": fc.domain, "freshchat_api_key": BAD}
    response = api.post("/v1/integrations", json={**body, "verify": False}, headers=ADMIN)
    assert response.status_code == 201
    assert fc.requests == []
