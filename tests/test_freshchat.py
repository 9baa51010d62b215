"""The Freshchat client against a stand-in Freshchat on loopback: key verification (§2),
the paginated group list, conversation lookups and Retry-After parsing (§5), and
verification through the admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import httpx2
import pytest
import redis
from starlette.testclient import TestClient

from app import freshchat
from app.errors import AppError, BadRequest, FreshchatUnreachable, UpstreamError
from app.freshchat import (
    OUTCOMES,
    fetch_conversation,
    list_groups,
    parse_retry_after,
    verify_api_key,
)
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


# The group list (§5).

NAMES = {f"g{n:03d}": f"Queue {n}" for n in range(123)} | {
    "gx:1": "Sales | EU: 🚀",
    "g 2/x": "Billing | EU 🌍",
    "g-colon": "Tier 1: Billing",
}


def listing(fc: FreshchatStandIn, key: str = GOOD, **kw: object) -> freshchat.GroupListing:
    with httpx.Client(timeout=httpx.Timeout(1.0), follow_redirects=False) as client:
        return list_groups(client, fc.domain, key, **kw)  # type: ignore[arg-type]


def test_list_groups_reads_every_page(fc: FreshchatStandIn) -> None:
    fc.script.groups = dict(NAMES)
    seen: list[str] = []
    answer = listing(fc, on_request=seen.append)
    assert answer.complete and answer.names == NAMES  # 126 groups, emoji, `|` and `:` intact
    assert (answer.outcome, answer.status, answer.requests) == ("ok", 200, 3)
    assert seen == ["ok"] * 3
    assert fc.listed_pages() == [1, 2, 3]
    assert all(q.query["items_per_page"] == ["50"] for q in fc.requests)
    assert all(q.authorization == f"Bearer {GOOD}" for q in fc.requests)
    assert fc.group_gets() == []  # never the per-id route


@pytest.mark.parametrize("count", [0, 1, 50, 51])
def test_list_groups_page_boundaries(fc: FreshchatStandIn, count: int) -> None:
    fc.script.groups = {f"g{n}": f"Q{n}" for n in range(count)}
    answer = listing(fc)
    assert answer.names == fc.script.groups
    assert fc.listed_pages() == list(range(1, max(1, -(-count // 50)) + 1))


def test_list_groups_cleans_names(fc: FreshchatStandIn) -> None:
    fc.script.groups = {"nul": "\0\0Sales", "long": "x" * 300, "empty": "", "ok": "Support"}
    answer = listing(fc)
    assert answer.complete and answer.names is not None
    assert answer.names["nul"] == "Sales"
    assert answer.names["long"] == "x" * freshchat.MAX_GROUP_NAME
    assert "empty" not in answer.names  # listed without a usable name: Undefined_Queue
    assert answer.names["ok"] == "Support"


def test_list_groups_failures(fc: FreshchatStandIn) -> None:
    fc.script.groups = dict(NAMES)
    rejected = listing(fc, BAD)
    fc.fail_next(403)
    forbidden = listing(fc)
    fc.fail_page(2, 429, retry_after="17")
    seen: list[str] = []
    limited = listing(fc, on_request=seen.append)
    fc.fail_page(3, 503)
    failed = listing(fc)
    fc.fail_next(302)
    redirected = listing(fc)
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        refused = list_groups(client, refused_domain(), GOOD)
    assert (rejected.outcome, rejected.requests, rejected.names) == ("unauthorized", 1, None)
    assert (forbidden.outcome, forbidden.status) == ("unauthorized", 403)
    assert (limited.outcome, limited.retry_after, limited.requests) == ("rate_limited", 17.0, 2)
    assert not limited.complete and seen == ["ok", "rate_limited"]
    assert (failed.outcome, failed.retry_after, failed.requests) == ("server_error", None, 3)
    assert (redirected.outcome, redirected.requests) == ("bad_response", 1)
    assert (refused.outcome, refused.requests) == ("network_error", 1)
    outcomes = {a.outcome for a in (rejected, limited, failed, redirected, refused)}
    assert outcomes <= set(OUTCOMES)
    assert fc.group_gets() == []


def test_list_groups_slow_is_a_network_error(fc: FreshchatStandIn) -> None:
    fc.slow(5.0)
    with httpx.Client(timeout=httpx.Timeout(0.2)) as client:
        answer = list_groups(client, fc.domain, GOOD)
    assert (answer.outcome, answer.names) == ("network_error", None)


def test_list_groups_a_group_created_meanwhile_makes_it_incomplete(fc: FreshchatStandIn) -> None:
    fc.script.groups = dict(NAMES)

    def create_one(page: int) -> None:
        if page == 2:  # a group created in front while page 1 was being read
            fc.script.groups = {"gnew": "New", **NAMES}

    fc.script.before_page = create_one
    answer = listing(fc)
    assert (answer.outcome, answer.complete, answer.requests) == ("bad_response", False, 3)


def test_list_groups_a_group_deleted_meanwhile_makes_it_incomplete(fc: FreshchatStandIn) -> None:
    fc.script.groups = dict(NAMES)

    def delete_one(page: int) -> None:
        if page == 2:
            fc.script.groups.pop("g000", None)

    fc.script.before_page = delete_one
    answer = listing(fc)
    assert (answer.outcome, answer.complete) == ("bad_response", False)


def answering(body: Callable[[httpx.Request], object], status: int = 200) -> httpx.Client:
    """A client whose every request gets `body(request)` as JSON (a Freshchat gone odd)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body(request))

    return httpx.Client(transport=httpx.MockTransport(handler))


def fixed(body: object) -> Callable[[httpx.Request], object]:
    """The same body for every request."""
    return lambda _: body


def test_list_groups_malformed_pages_are_bad_responses() -> None:
    bodies: list[object] = [
        ["not", "an", "object"],
        {"groups": "nope"},
        {"groups": [{"name": "no id"}]},
        {"groups": ["g1"]},
        {"groups": [{"id": True, "name": "x"}]},
    ]
    for body in bodies:
        with answering(fixed(body)) as client:
            answer = list_groups(client, "https://acme.freshchat.com", GOOD)
        assert (answer.outcome, answer.complete) == ("bad_response", False), body


def test_list_groups_without_paging_fields_is_one_page() -> None:
    body = {"groups": [{"id": "g1", "name": "Customer Support"}, {"id": 7, "name": "Numeric"}]}
    with answering(lambda _: body) as client:
        answer = list_groups(client, "https://acme.freshchat.com", GOOD)
    assert answer.names == {"g1": "Customer Support", "7": "Numeric"}
    assert answer.requests == 1


def test_list_groups_guards_against_endless_listings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshchat, "MAX_LIST_PAGES", 5)
    asked: list[str] = []

    def endless(request: httpx.Request) -> object:
        asked.append(request.url.params["page"])
        page = int(request.url.params["page"])
        href = "https://evil.example.com/v2/groups?page=1"  # never followed: built here
        return {"groups": [{"id": f"g{page}", "name": "x"}], "links": {"next_page": {"href": href}}}

    with answering(endless) as client:
        answer = list_groups(client, "https://acme.freshchat.com", GOOD)
    assert (answer.outcome, answer.requests, asked) == (
        "bad_response",
        5,
        ["1", "2", "3", "4", "5"],
    )

    def ignores_page(request: httpx.Request) -> object:
        return {"groups": [], "pagination": {"total_pages": 3, "current_page": 1}}

    with answering(ignores_page) as client:
        answer = list_groups(client, "https://acme.freshchat.com", GOOD)
    assert (answer.outcome, answer.requests) == ("bad_response", 2)

    def absurd(request: httpx.Request) -> object:
        return {"groups": [], "pagination": {"total_pages": 10**6, "current_page": 1}}

    with answering(absurd) as client:
        answer = list_groups(client, "https://acme.freshchat.com", GOOD)
    assert (answer.outcome, answer.requests) == ("bad_response", 1)


def test_list_groups_refuses_a_key_that_cannot_be_a_header(fc: FreshchatStandIn) -> None:
    assert listing(fc, "two words").outcome == "unauthorized"
    assert fc.requests == []


# Conversation lookups (§5, §12).


def conversation(fc: FreshchatStandIn, cid: str, key: str = GOOD) -> freshchat.ConversationAnswer:
    with httpx.Client(timeout=httpx.Timeout(1.0), follow_redirects=False) as client:
        return fetch_conversation(client, fc.domain, key, cid)


def test_fetch_conversation_outcomes(fc: FreshchatStandIn) -> None:
    cid = "5a1c8b0e-0000-4000-8000-000000000001"
    fc.script.conversations = {cid: "g1", "odd id/x": None, "numeric": 42}
    assigned = conversation(fc, cid)
    odd = conversation(fc, "odd id/x")
    numeric = conversation(fc, "numeric")
    unknown = conversation(fc, "nope")
    rejected = conversation(fc, cid, BAD)
    fc.fail_next(429, retry_after="9")
    limited = conversation(fc, cid)
    fc.fail_next(500)
    failed = conversation(fc, cid)
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        refused = fetch_conversation(client, refused_domain(), GOOD, cid)
    assert assigned == freshchat.ConversationAnswer(group_id="g1", answered=True, status=200)
    assert (odd.answered, odd.group_id) == (True, None)
    assert numeric.group_id == "42"
    assert (unknown.answered, unknown.group_id, unknown.outcome) == (True, None, "not_found")
    assert (rejected.answered, rejected.outcome) == (False, "unauthorized")
    assert (limited.outcome, limited.retry_after, limited.answered) == ("rate_limited", 9.0, False)
    assert (failed.outcome, failed.answered) == ("server_error", False)
    assert (refused.outcome, refused.answered) == ("network_error", False)
    paths = [q.path for q in fc.conversation_gets()]
    assert paths[:2] == [f"/v2/conversations/{cid}", "/v2/conversations/odd%20id%2Fx"]
    assert all(q.authorization == f"Bearer {GOOD}" for q in fc.requests if q.path != paths[4])


def test_fetch_conversation_malformed_is_a_bad_response() -> None:
    for body in (["x"], {"assigned_group_id": {"id": "g1"}}, {"assigned_group_id": True}):
        with answering(fixed(body)) as client:
            answer = fetch_conversation(client, "https://acme.freshchat.com", GOOD, "c1")
        assert (answer.outcome, answer.answered) == ("bad_response", False), body


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
