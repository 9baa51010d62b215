"""Admin API (§7) and the counts read API (§6)."""

from __future__ import annotations

from typing import Any

import redis
from starlette.testclient import TestClient

from app.settings import Settings
from tests.support import (
    ADMIN,
    READER,
    apply_all,
    at,
    bearer,
    conv_event,
    create_integration,
    post_events,
    shard_of,
)


def test_integration_lifecycle(client: TestClient, r: redis.Redis) -> None:
    assert client.get("/v1/integrations", headers=ADMIN).json() == {"integrations": []}
    created = client.post(
        "/v1/integrations",
        json={
            "name": "  Acme  ",
            "freshchat_domain": "HTTPS://Acme.Freshchat.com./app",
            "freshchat_api_key": "k1",
            "verify": False,
        },
        headers=ADMIN,
    )
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "Acme" and body["freshchat_domain"] == "acme.freshchat.com"
    assert set(body) == {"id", "name", "freshchat_domain", "created_at", "status"}
    iid = body["id"]
    dup = client.post(
        "/v1/integrations",
        json={
            "name": "ACME",
            "freshchat_domain": "b.freshchat.com",
            "freshchat_api_key": "k",
            "verify": False,
        },
        headers=ADMIN,
    )
    assert dup.status_code == 409 and "already exists" in dup.json()["error"]
    renamed = client.patch(f"/v1/integrations/{iid}", json={"name": "Acme EU"}, headers=ADMIN)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Acme EU"
    assert client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()["name"] == "Acme EU"
    assert client.get("/v1/integrations/nope", headers=ADMIN).status_code == 404
    key = client.post(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()
    assert key["api_key"].startswith(key["prefix"]) and len(key["api_key"]) >= 43 + len(
        key["prefix"]
    )
    listed = client.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert key["api_key"] not in str(listed) and "hash" not in listed[0]
    assert client.delete(f"/v1/integrations/{iid}", headers=ADMIN).status_code == 204
    assert client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()["status"] == "deleted"
    event = conv_event("c", "resolved", at("2026-11-23T08:00"))
    posted = post_events(client, key["api_key"], event)
    assert posted.status_code == 401
    listed = client.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    assert listed[0]["revoked_at"] is not None
    counts = client.get(
        f"/v1/integrations/{iid}/contacts?from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00Z",
        headers=READER,
    )
    assert counts.status_code == 200  # counts stay readable after deletion


def test_bad_admin_input(client: TestClient) -> None:
    def create(**body: object) -> dict[str, object]:
        response = client.post("/v1/integrations", json={"verify": False, **body}, headers=ADMIN)
        assert response.status_code == 400, response.text
        data: dict[str, object] = response.json()
        return data

    base = {"name": "A", "freshchat_domain": "a.freshchat.com", "freshchat_api_key": "k"}
    assert "not a Freshchat domain" in str(
        create(**{**base, "freshchat_domain": "evil.com"})["error"]
    )
    assert "not a Freshchat domain" in str(
        create(**{**base, "freshchat_domain": "169.254.169.254"})["error"]
    )
    assert "https" in str(create(**{**base, "freshchat_domain": "http://a.freshchat.com"})["error"])
    assert "1-100" in str(create(**{**base, "name": "   "})["error"])
    assert "1-100" in str(create(**{**base, "name": "x" * 101})["error"])
    assert create(**{**base, "unknown": 1})["detail"]
    missing: Any = create(name="A")
    assert {tuple(d["loc"]) for d in missing["detail"]} == {
        ("freshchat_domain",),
        ("freshchat_api_key",),
    }


def test_admin_surfaces_need_the_admin_token(client: TestClient) -> None:
    iid, api_key = create_integration(client)
    for headers in (
        {},
        READER,
        bearer(api_key),
        {"Authorization": "Bearer x"},
    ):
        assert client.get("/v1/integrations", headers=headers).status_code == 401
        assert client.post(f"/v1/integrations/{iid}/api-keys", headers=headers).status_code == 401
        assert client.delete(f"/v1/integrations/{iid}", headers=headers).status_code == 401


def test_counts_read_api(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    iid, key = create_integration(client)
    g1, g2 = ("g1", "Customer Support"), ("g2", "Billing")
    events = [
        conv_event("a", "resolved", at("2026-11-23T08:01"), g1),
        conv_event("b", "resolved", at("2026-11-23T08:14"), g1),
        conv_event("c", "resolved", at("2026-11-23T08:16"), g2),
        conv_event("d", "resolved", at("2026-11-23T08:44"), g1),
        conv_event("e", "spam", at("2026-11-23T09:59"), g1),
        conv_event("f", "resolved", at("2026-11-24T00:00"), g1),
    ]
    assert post_events(client, key, events).status_code == 202
    apply_all(r, settings, shard_of(r, settings, iid))
    base = f"/v1/integrations/{iid}/contacts?from=2026-11-23T08:00:00Z&to=2026-11-24T00:00:00Z"

    def rows(query: str, headers: dict[str, str] = READER) -> list[tuple[str, str, int]]:
        response = client.get(base + query, headers=headers)
        assert response.status_code == 200, response.text
        return [(x["interval_start"], x["queue"], x["contacts"]) for x in response.json()["rows"]]

    assert rows("") == [
        ("2026-11-23T08:00:00Z", "Customer Support", 2),
        ("2026-11-23T08:15:00Z", "Billing", 1),
        ("2026-11-23T08:30:00Z", "Customer Support", 1),
        ("2026-11-23T09:45:00Z", "Undefined_Queue", 1),
    ]
    assert rows("&interval=30") == [
        ("2026-11-23T08:00:00Z", "Billing", 1),
        ("2026-11-23T08:00:00Z", "Customer Support", 2),
        ("2026-11-23T08:30:00Z", "Customer Support", 1),
        ("2026-11-23T09:30:00Z", "Undefined_Queue", 1),
    ]
    assert rows("&interval=60", ADMIN) == [
        ("2026-11-23T08:00:00Z", "Billing", 1),
        ("2026-11-23T08:00:00Z", "Customer Support", 3),
        ("2026-11-23T09:00:00Z", "Undefined_Queue", 1),
    ]
    assert rows("&queue=Billing") == [("2026-11-23T08:15:00Z", "Billing", 1)]
    csv = client.get(base + "&format=csv", headers=READER)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[:2] == [
        "interval_start,queue,contacts",
        "2026-11-23T08:00:00Z,Customer Support,2",
    ]
    accept = client.get(base, headers={**READER, "Accept": "text/csv"})
    assert accept.text == csv.text
    # Asia/Kolkata is UTC+5:30: 60-minute intervals align to the local hour.
    tz = (
        f"/v1/integrations/{iid}/contacts?from=2026-11-23T13:00:00%2B05:30"
        "&to=2026-11-23T16:00:00%2B05:30&interval=60&tz=Asia/Kolkata"
    )
    local = client.get(tz, headers=READER).json()["rows"]
    assert [(x["interval_start"], x["queue"], x["contacts"]) for x in local] == [
        ("2026-11-23T13:00:00+05:30", "Billing", 1),  # 08:16Z
        ("2026-11-23T13:00:00+05:30", "Customer Support", 2),  # 08:01Z, 08:14Z
        ("2026-11-23T14:00:00+05:30", "Customer Support", 1),  # 08:44Z
        ("2026-11-23T15:00:00+05:30", "Undefined_Queue", 1),  # 09:59Z
    ]
    misaligned = client.get(tz.replace("13:00:00", "13:30:00"), headers=READER)
    assert misaligned.status_code == 400 and "Asia/Kolkata" in misaligned.json()["error"]
    queues = client.get(f"/v1/integrations/{iid}/queues", headers=READER).json()["queues"]
    assert {q["queue"]: q["contacts"] for q in queues} == {
        "Billing": 1,
        "Customer Support": 4,
        "Undefined_Queue": 1,
    }


def test_counts_read_api_errors(client: TestClient) -> None:
    iid, key = create_integration(client)
    base = f"/v1/integrations/{iid}/contacts"

    def error(query: str) -> str:
        response = client.get(base + query, headers=READER)
        assert response.status_code == 400, response.text
        return str(response.json()["error"])

    assert "`from` is required" in error("?to=2026-11-23T09:00:00Z")
    assert "ISO 8601" in error("?from=yesterday&to=2026-11-23T09:00:00Z")
    assert "1970" in error("?from=0001-01-01T00:00:00.0%2B00:01&to=0001-01-01T00:00:00Z")
    assert "1970" in error("?from=1969-12-31T00:00:00Z&to=1970-01-01T00:00:00Z")
    assert "interval" in error("?from=2026-11-23T08:00:00Z&to=2026-11-23T09:00:00Z&interval=20")
    assert "aligned" in error("?from=2026-11-23T08:10:00Z&to=2026-11-23T09:00:00Z")
    assert "aligned" in error("?from=2026-11-23T08:15:00Z&to=2026-11-23T09:00:00Z&interval=30")
    assert "after" in error("?from=2026-11-23T09:00:00Z&to=2026-11-23T09:00:00Z")
    assert "31 days" in error("?from=2026-10-01T00:00:00Z&to=2026-11-23T00:00:00Z")
    assert "time zone" in error("?from=2026-11-23T08:00:00Z&to=2026-11-23T09:00:00Z&tz=Mars/Base")
    ok = "?from=2026-11-23T08:00:00Z&to=2026-11-23T09:00:00Z"
    assert client.get(f"/v1/integrations/nope/contacts{ok}", headers=READER).status_code == 404
    assert client.get("/v1/integrations/nope/queues", headers=READER).status_code == 404
    assert client.get(base + ok, headers=bearer(key)).status_code == 401
    assert client.get(base + ok).status_code == 401
