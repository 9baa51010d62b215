"""The deliveries log, explaining a chat, and the app's lifecycle events (§7)."""

from __future__ import annotations

import time
import uuid

import redis
from starlette.testclient import TestClient

from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.support import (
    ADMIN,
    G1,
    IPARAMS_MARKER,
    all_stored_bytes,
    apply_all,
    at,
    conv_event,
    create_integration,
    post_events,
    shard_of,
    wait_until,
)

T = at("2026-11-23T08:07")


def _deliveries(client: TestClient, iid: str, **params: str) -> list[dict]:  # type: ignore[type-arg]
    answer = client.get(f"/v1/integrations/{iid}/deliveries", headers=ADMIN, params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])


def test_every_request_is_logged_newest_first_with_what_counting_saw(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(client)
    chat, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert post_events(client, key, conv_event(chat, "assigned", T, G1)).status_code == 202
    batch = [conv_event(other, "resolved", T, None), {"event": "onMessageCreate"}]
    assert post_events(client, key, batch).status_code == 202
    bad = conv_event(chat, "resolved", T, G1)
    bad["timestamp"] = "yesterday"
    assert post_events(client, key, bad).status_code == 400
    listed = _deliveries(client, iid)
    assert [d["status"] for d in listed] == [400, 202, 202]
    rejected, second, first = listed
    assert rejected["reason"].startswith("invalid") and rejected["events"] == []
    assert (second["accepted"], second["ignored"]) == (1, 1)
    assert second["events"] == [
        {
            "event": "onConversationUpdate",
            "conversation_id": other,
            "kind": "solved",
            "time": "2026-11-23T08:07:00Z",
            "group_id": None,
            "group_name": None,
            "path": "app",
        }
    ]
    assert first["events"][0]["kind"] == "other"
    assert first["events"][0]["group_name"] == G1[1]
    # Searchable by conversation id, and paged with `before`.
    assert [d["id"] for d in _deliveries(client, iid, conversation_id=chat)] == [first["id"]]
    assert _deliveries(client, iid, limit="1") == [rejected]
    assert _deliveries(client, iid, before=second["id"]) == [first]
    assert _deliveries(client, iid, before="0-0") == []  # Redis refuses "(0-0": no 503
    assert _deliveries(client, iid, before="00-00") == []
    # Nothing but what counting uses is kept: no key, no iparams.
    stream = RedisKeys(settings.key_prefix).deliveries(shard_of(r, settings, iid), iid)
    assert r.xlen(stream) == 3
    # An integration that stops sending keeps its log no longer than DELIVERIES_DAYS.
    assert 0 < r.ttl(stream) <= settings.deliveries_days * 86_400
    r.persist(stream)
    assert post_events(client, key, bad).status_code == 400  # a reject renews it as well
    wait_until(lambda: r.ttl(stream) > 0, 5, "the log's lifetime renewed")
    assert r.ttl(stream) <= settings.deliveries_days * 86_400
    kept = all_stored_bytes(r)
    assert IPARAMS_MARKER.encode() not in kept and key.encode() not in kept
    assert (
        client.get(
            f"/v1/integrations/{iid}/deliveries", params={"limit": "0"}, headers=ADMIN
        ).status_code
        == 400
    )


def test_revoked_key_requests_are_listed_as_401(client: TestClient) -> None:
    iid, key = create_integration(client)
    [key_meta] = client.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    client.delete(f"/v1/integrations/{iid}/api-keys/{key_meta['key_id']}", headers=ADMIN)
    chat = str(uuid.uuid4())
    assert post_events(client, key, conv_event(chat, "resolved", T, G1)).status_code == 401
    [refused] = _deliveries(client, iid)
    assert refused["status"] == 401 and refused["accepted"] == 0
    assert refused["events"][0]["conversation_id"] == chat


def test_log_is_bounded_by_count(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    iid, key = create_integration(client)
    kept = settings.deliveries_kept
    for n in range(kept + 300):
        post_events(client, key, conv_event(f"c{n}", "assigned", T, G1))
    stream = RedisKeys(settings.key_prefix).deliveries(shard_of(r, settings, iid), iid)
    assert kept <= r.xlen(stream) < kept + 200  # trimmed (whole nodes at a time)
    assert len(_deliveries(client, iid, limit="1000")) == 1000


def test_explain_says_where_when_and_why(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(client)
    shard = shard_of(r, settings, iid)
    named, learnt, nogroup, deleted, open_chat = (str(uuid.uuid4()) for _ in range(5))
    post_events(client, key, conv_event(named, "resolved", T, G1))
    post_events(client, key, conv_event(learnt, "resolved", T, None, group_id_only=G1[0]))
    post_events(client, key, conv_event(nogroup, "resolved", T, None))
    post_events(client, key, conv_event(deleted, "deleted", T, G1))
    post_events(client, key, conv_event(open_chat, "assigned", T, G1))
    apply_all(r, settings, shard)

    def why(chat: str) -> dict:  # type: ignore[type-arg]
        answer = client.get(f"/v1/integrations/{iid}/chats/{chat}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    one = why(named)
    assert one["counted"] and one["kind"] == "solved" and one["queue"] == G1[1]
    assert (one["time"], one["interval_start"]) == ("2026-11-23T08:07:00Z", "2026-11-23T08:00:00Z")
    assert one["why"]["code"] == "group_name_in_event" and G1[1] in one["why"]["text"]
    assert [d["events"][0]["conversation_id"] for d in one["deliveries"]] == [named]
    assert why(learnt)["why"]["code"] == "group_name_learnt"
    assert why(nogroup)["why"]["code"] == "no_group"
    assert why(nogroup)["queue"] == "Undefined_Queue"
    gone = why(deleted)
    assert (gone["kind"], gone["queue"], gone["why"]["code"]) == (
        "deleted",
        "Undefined_Queue",
        "deleted_or_spam",
    )
    still = why(open_chat)
    assert not still["counted"] and still["why"]["code"] == "not_terminal_yet"
    missing = client.get(f"/v1/integrations/{iid}/chats/{uuid.uuid4()}", headers=ADMIN)
    assert missing.status_code == 404
    assert client.get(f"/v1/integrations/{iid}/chats/x", headers={}).status_code == 401


def test_explain_a_chat_waiting_for_its_group_name(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(client)
    shard = shard_of(r, settings, iid)
    chat = str(uuid.uuid4())
    post_events(client, key, conv_event(chat, "resolved", T, None, group_id_only="g-unknown"))
    post_events(client, key, conv_event(str(uuid.uuid4()), "resolved", T, None))
    apply_all(r, settings, shard)
    answer = client.get(f"/v1/integrations/{iid}/chats/{chat}", headers=ADMIN).json()
    assert (answer["counted"], answer["kind"]) == (False, "solved")
    assert answer["why"]["code"] == "waiting_for_group_name"
    listed = client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()
    assert listed["pending_events"] == 1  # this integration's, not its shard's


def test_app_lifecycle_events_are_shown_and_uninstall_flags(client: TestClient) -> None:
    iid, key = create_integration(client)
    before = int(time.time())
    assert post_events(client, key, {"event": "onAppInstall", "data": {}}).status_code == 202
    got = client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()
    assert got["app_installed_at"] >= before
    assert got["state"] == "receiving"  # the app reached us: the connection works
    time.sleep(1.1)
    assert post_events(client, key, {"event": "onAppUninstall", "data": {}}).status_code == 202
    got = client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()
    assert got["state"] == "app_uninstalled" and got["stale"] is True
    assert "uninstalled" in got["state_reason"] and got["state_fix"]
