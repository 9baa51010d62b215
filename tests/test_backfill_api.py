"""`/v1/integrations/{id}/backfills[/{bid}]` (§13): start (202), list, read and cancel a
backfill with the admin token; errors name the field; /openapi.json describes them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.backfill_support import backfill_settings, days_ago, new_integration, random_rows, today
from tests.extract_standin import ExtractStandIn, running
from tests.page_support import saved_integration
from tests.support import ADMIN, READER, bearer
from workers.backfill import Backfiller

FIELDS = {
    "backfill_id", "integration_id", "state", "from", "to", "windows_total", "windows_done",
    "rows_read", "rows_skipped", "chats_counted", "created_at", "started_at", "finished_at",
    "eta_seconds", "error",
}  # fmt: skip


@pytest.fixture
def bs(settings: Settings) -> Settings:
    """Backfill settings (stand-in domains allowed, no submission spacing)."""
    return backfill_settings(settings.redis_url)


@pytest.fixture
def api(bs: Settings) -> Iterator[TestClient]:
    """The app in-process with the backfill settings."""
    with TestClient(create_app(bs)) as client:
        yield client


def start(api: TestClient, iid: str, body: Any) -> Any:
    """POST a backfill; the answer."""
    return api.post(f"/v1/integrations/{iid}/backfills", headers=ADMIN, json=body)


def test_start_read_list_and_cancel(api: TestClient) -> None:
    iid = saved_integration(api)
    created = start(api, iid, {"from": days_ago(20), "to": days_ago(1)})
    assert created.status_code == 202, created.text
    first = created.json()
    assert set(first) == FIELDS
    assert (first["state"], first["from"], first["to"]) == ("queued", days_ago(20), days_ago(1))
    assert (first["windows_total"], first["windows_done"], first["rows_read"]) == (3, 0, 0)
    assert first["started_at"] is None and first["eta_seconds"] is None and first["error"] is None
    assert isinstance(first["created_at"], int)
    bid = first["backfill_id"]
    one = api.get(f"/v1/integrations/{iid}/backfills/{bid}", headers=ADMIN)
    assert one.status_code == 200 and one.json() == first
    # One queued or running per integration: the 409 names the one in the way.
    again = start(api, iid, {"from": days_ago(2), "to": days_ago(1)})
    assert again.status_code == 409
    assert again.json()["detail"] == [{"backfill_id": bid, "state": "queued"}]
    cancelled = api.delete(f"/v1/integrations/{iid}/backfills/{bid}", headers=ADMIN)
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    # Cancelling again changes nothing; now another may start; the list is newest first.
    assert api.delete(f"/v1/integrations/{iid}/backfills/{bid}", headers=ADMIN).status_code == 202
    second = start(api, iid, {"from": days_ago(2), "to": days_ago(2)})
    assert second.status_code == 202 and second.json()["windows_total"] == 1
    listed = api.get(f"/v1/integrations/{iid}/backfills", headers=ADMIN)
    assert listed.status_code == 200
    ids = [b["backfill_id"] for b in listed.json()["backfills"]]
    assert ids == [second.json()["backfill_id"], bid]
    assert all(set(b) == FIELDS for b in listed.json()["backfills"])


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"to": "DAY1"}, "from", "from is required"),
        ({"from": "2026-1-1", "to": "DAY1"}, "from", "YYYY-MM-DD"),
        ({"from": "yesterday", "to": "DAY1"}, "from", "YYYY-MM-DD"),
        ({"from": "FUTURE", "to": "FUTURE"}, "from", "in the future"),
        ({"from": "DAY1", "to": "DAY3"}, "from", ") is after to ("),
        ({"from": "DAY3", "to": "OLD"}, "to", "a UTC day"),
        ({"from": "DAY3", "to": "DAY1", "verify": False}, "verify", "unknown field"),
        ({"from": "ANCIENT", "to": "DAY1"}, "from", "older than the counts retention"),
    ],
)
def test_bad_ranges_are_400_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str, words: str
) -> None:
    days = {
        "FUTURE": (today() + timedelta(days=1)).isoformat(),
        "DAY1": days_ago(1),
        "DAY3": days_ago(3),
        "OLD": 20260101,
        "ANCIENT": days_ago(400),
    }
    body = {k: days.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    iid = saved_integration(api)
    answer = start(api, iid, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["reason"] == "invalid" and words in error["error"]
    assert error["detail"][0]["loc"] == ["body", field]
    assert api.get(f"/v1/integrations/{iid}/backfills", headers=ADMIN).json() == {"backfills": []}


def test_malformed_bodies_are_400(api: TestClient) -> None:
    iid = saved_integration(api)
    url = f"/v1/integrations/{iid}/backfills"
    broken = api.post(url, headers=ADMIN, content=b'{"from": ')
    assert broken.status_code == 400 and broken.json()["reason"] == "invalid"
    for body in (b"[]", b'"2026-01-01"', b"null"):
        answer = api.post(url, headers=ADMIN, content=body)
        assert answer.status_code == 400 and answer.json()["detail"][0]["loc"] == ["body"]
    empty = api.post(url, headers=ADMIN)
    assert empty.status_code == 400 and empty.json()["detail"][0]["loc"] == ["body", "from"]


def test_unknown_integration_or_backfill_is_404(api: TestClient) -> None:
    iid = saved_integration(api)
    day = {"from": days_ago(2), "to": days_ago(1)}
    assert start(api, "nosuchone0", day).status_code == 404
    for path in ("nosuchone0/backfills", "nosuchone0/backfills/x", f"{iid}/backfills/nosuchbf"):
        answer = api.get(f"/v1/integrations/{path}", headers=ADMIN)
        assert answer.status_code == 404 and answer.json()["reason"] == "not_found", path
    gone = api.delete(f"/v1/integrations/{iid}/backfills/nosuchbf", headers=ADMIN)
    assert gone.status_code == 404
    # A deleted integration keeps its record but starts no backfill.
    assert api.delete(f"/v1/integrations/{iid}", headers=ADMIN).status_code == 204
    assert start(api, iid, day).status_code == 409


def test_every_operation_needs_the_admin_token(api: TestClient) -> None:
    iid = saved_integration(api)
    bid = start(api, iid, {"from": days_ago(2), "to": days_ago(1)}).json()["backfill_id"]
    for headers in ({}, READER, bearer("wrong-token-0123456789")):
        for method, path in (
            ("POST", f"/v1/integrations/{iid}/backfills"),
            ("GET", f"/v1/integrations/{iid}/backfills"),
            ("GET", f"/v1/integrations/{iid}/backfills/{bid}"),
            ("DELETE", f"/v1/integrations/{iid}/backfills/{bid}"),
        ):
            answer = api.request(method, path, headers=headers, json={"from": days_ago(1)})
            assert answer.status_code == 401, (method, path, headers)
            assert answer.headers["www-authenticate"] == "Bearer" and bid not in answer.text
    assert api.get(f"/v1/integrations/{iid}/backfills/{bid}", headers=ADMIN).json()["state"] == (
        "queued"
    )


def test_a_finished_backfill_cannot_be_cancelled(
    api: TestClient, bs: Settings, r: redis.Redis
) -> None:
    rows = random_rows(random.Random(5), today() - timedelta(days=2), 2, 50)
    with running() as fc:
        fc.script.rows = rows
        integration = new_integration(bs, fc)
        answer = start(api, integration.id, {"from": days_ago(2), "to": days_ago(1)})
        bid = answer.json()["backfill_id"]
        run_to_the_end(bs, r, fc, integration.id, bid)
    done = api.get(f"/v1/integrations/{integration.id}/backfills/{bid}", headers=ADMIN).json()
    assert (done["state"], done["windows_done"], done["eta_seconds"]) == ("done", 1, 0)
    assert done["rows_read"] == done["chats_counted"] == len(rows) and done["finished_at"]
    refused = api.delete(f"/v1/integrations/{integration.id}/backfills/{bid}", headers=ADMIN)
    assert refused.status_code == 409 and "already finished (done)" in refused.json()["error"]


def run_to_the_end(bs: Settings, r: redis.Redis, fc: ExtractStandIn, iid: str, bid: str) -> None:
    """The worker's Backfiller, in this process, until the backfill ends."""
    worker = Backfiller.build(bs, r)
    worker.poll_first_s, worker.poll_max_s = 0.01, 0.05
    try:
        assert worker.run(iid, bid, wait_inline=True)["state"] == "done"
    finally:
        worker.close()


def test_openapi_describes_the_four_operations(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    listing = doc["paths"]["/v1/integrations/{iid}/backfills"]
    one = doc["paths"]["/v1/integrations/{iid}/backfills/{bid}"]
    assert set(listing) == {"get", "post"} and set(one) == {"get", "delete"}
    ref = "#/components/schemas/"
    post = listing["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": ref + "BackfillIn"
    }
    assert set(post["responses"]) == {"202", "400", "401", "404", "409"}
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": ref + "BackfillOut"
    }
    assert one["delete"]["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": ref + "BackfillOut"
    }
    assert listing["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": ref + "BackfillList"
    }
    assert all(op["security"] == [{"admin": []}] for op in (*listing.values(), *one.values()))
    schemas = doc["components"]["schemas"]
    assert set(schemas["BackfillOut"]["properties"]) == FIELDS
    assert set(schemas["BackfillIn"]["properties"]) == {"from", "to"}
    assert schemas["BackfillIn"]["additionalProperties"] is False
    states = schemas["BackfillOut"]["properties"]["state"]["enum"]
    assert states == ["queued", "running", "done", "failed", "cancelled"]
