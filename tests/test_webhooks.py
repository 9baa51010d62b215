"""Freshchat's own signed webhooks (§12): setup, signatures, the actions, the group order."""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.support import (
    ADMIN,
    G1,
    WEBHOOK_FIXTURES,
    apply_all,
    at,
    conv_event,
    counts,
    create_integration,
    iso,
    post_events,
    post_webhook,
    set_up_webhook,
    shard_of,
    sign,
    webhook_event,
    webhook_key_pem,
)

T = at("2026-11-23T08:07")
MINUTE = 60_000
FIXTURE_GROUP = "7d1f3e2a-0b4c-4d5e-8f6a-9b0c1d2e3f4a"


def _name_groups(r: redis.Redis, settings: Settings, iid: str, **names: Any) -> None:
    """Name group ids as if an app event had carried them (no Freshchat here)."""
    keys = RedisKeys(settings.key_prefix)
    group_map = keys.groups(shard_of(r, settings, iid), iid)
    for gid, name in names.items():
        r.hset(group_map, gid, name)


def _counted(r: redis.Redis, settings: Settings, iid: str) -> dict[tuple[str, str], int]:
    shard = shard_of(r, settings, iid)
    apply_all(r, settings, shard)
    return counts(r, settings, iid, shard)


def _explain(client: TestClient, iid: str, chat: str) -> dict:  # type: ignore[type-arg]
    answer = client.get(f"/v1/integrations/{iid}/chats/{chat}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_setup_takes_the_key_as_copied_and_answers_the_url(client: TestClient) -> None:
    iid, _ = create_integration(client)
    url = f"/v1/integrations/{iid}/webhook"
    assert client.get(url, headers=ADMIN).status_code == 404
    copied = (WEBHOOK_FIXTURES / "test_public_key_as_copied.txt").read_text()
    first = client.put(url, json={"public_key": copied}, headers=ADMIN)
    assert first.status_code == 200, first.text
    hook = first.json()
    assert hook["url"] == "http://testserver/v1/freshchat/webhooks/" + hook["webhook_id"]
    assert len(hook["webhook_id"]) >= 22  # >= 128 random bits
    assert hook["public_key"].startswith("-----BEGIN PUBLIC KEY-----\n")
    assert client.get(url, headers=ADMIN).json() == hook
    spaced = webhook_key_pem().replace("\n", " ")
    again = client.put(url, json={"public_key": spaced}, headers=ADMIN).json()
    assert again["webhook_id"] == hook["webhook_id"]  # a new key keeps the URL
    assert again["fingerprint"] == hook["fingerprint"]
    moved = client.put(url, json={"public_key": copied, "new_url": True}, headers=ADMIN).json()
    assert moved["webhook_id"] != hook["webhook_id"]
    body = json.loads((WEBHOOK_FIXTURES / "message_create.json").read_text())
    old_path = "/v1/freshchat/webhooks/" + hook["webhook_id"]
    assert post_webhook(client, old_path, body).status_code == 404
    new_path = "/v1/freshchat/webhooks/" + moved["webhook_id"]
    assert post_webhook(client, new_path, body).status_code == 202
    assert client.delete(url, headers=ADMIN).status_code == 204
    assert post_webhook(client, new_path, body).status_code == 404
    assert client.delete(url, headers=ADMIN).status_code == 404
    assert client.get(url, headers=ADMIN).status_code == 404


def test_setup_refuses_what_is_not_an_rsa_public_key(client: TestClient) -> None:
    iid, _ = create_integration(client)
    url = f"/v1/integrations/{iid}/webhook"
    private = (WEBHOOK_FIXTURES / "test_private_key.pem").read_text()
    cases = {
        "": "it is empty",
        "hello world!": "not base64",
        "hello world": "not a public key",
        "-----BEGIN PUBLIC KEY-----QUJD-----END PUBLIC KEY-----": "not a public key",
        private: "this is a private key",
        webhook_key_pem() + webhook_key_pem(): "exactly one BEGIN and one END",
    }
    for pasted, why in cases.items():
        answer = client.put(url, json={"public_key": pasted}, headers=ADMIN)
        assert answer.status_code == 400, pasted
        assert why in answer.json()["error"]
        assert "PRIVATE KEY-----" not in answer.text
    assert client.put(url, json={}, headers=ADMIN).status_code == 400
    assert client.put(url, json={"public_key": webhook_key_pem()}).status_code == 401
    missing = client.put("/v1/integrations/nope/webhook", json={"public_key": webhook_key_pem()})
    assert missing.status_code == 401
    answer = client.put(
        "/v1/integrations/nope/webhook", json={"public_key": webhook_key_pem()}, headers=ADMIN
    )
    assert answer.status_code == 404
    client.delete(f"/v1/integrations/{iid}", headers=ADMIN)
    answer = client.put(url, json={"public_key": webhook_key_pem()}, headers=ADMIN)
    assert answer.status_code == 409


def test_the_fixture_bodies_with_their_signatures(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    path = set_up_webhook(client, iid)
    signatures = json.loads((WEBHOOK_FIXTURES / "signatures.json").read_text())
    expected = {
        "message_create.json": (0, 1),
        "conversation_assignment.json": (1, 0),
        "conversation_resolution.json": (1, 0),
        "conversation_reopen.json": (1, 0),
        "conversation_resolution_no_group.json": (1, 0),
    }
    for name, (accepted, ignored) in expected.items():
        body = (WEBHOOK_FIXTURES / name).read_bytes()
        answer = post_webhook(client, path, body, signatures[name])
        assert answer.status_code == 202, (name, answer.text)
        assert answer.json() == {"accepted": accepted, "ignored": ignored}, name
    _name_groups(r, settings, iid, **{FIXTURE_GROUP: "Customer Support"})
    # The chat with no group in its resolution waits for Freshchat (no assignment seen).
    assert _counted(r, settings, iid) == {("2026-11-23T08:00Z", "Customer Support"): 1}
    waiting = _explain(client, iid, "d4a2b3c5-6e7f-4081-9bac-1d2e3f4a5b6c")
    assert waiting["why"]["code"] == "waiting_for_chat_group"
    counted = _explain(client, iid, "c3f1a2b4-5d6e-4f70-8a9b-0c1d2e3f4a5b")
    assert counted["why"]["code"] == "group_name_learnt"
    assert counted["assignment"] == {
        "group_id": FIXTURE_GROUP,
        "at": "2026-11-23T08:02:11Z",
        "source": "webhook_assignment",
    }
    assert {d["path"] for d in counted["deliveries"]} == {"webhook"}
    assert [e["event"] for d in counted["deliveries"] for e in d["events"]] == [
        "conversation_reopen",
        "conversation_resolution",
        "conversation_assignment",
    ]


def test_every_signature_failure_is_one_401_that_stores_nothing(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    path = set_up_webhook(client, iid)
    body = json.dumps(webhook_event("conversation_resolution", str(uuid.uuid4()), T, "g1"))
    raw = body.encode()
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign_pem = foreign.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    other_body = raw.replace(b"g1", b"g2")
    cases = {
        "missing": None,
        "empty": " ",
        "not base64": "!!not base64!!",
        "another body's": sign(other_body),
        "a foreign key's": sign(raw, foreign_pem),
        "truncated": sign(raw)[:-8],
        "huge": "A" * 100_000,
    }
    answers = {
        what: post_webhook(client, path, raw, signature) for what, signature in cases.items()
    }
    for what, answer in answers.items():
        assert answer.status_code == 401, what
        assert answer.json() == answers["missing"].json(), what
    # The signature covers the exact bytes: the same JSON re-spaced is refused too.
    respaced = json.dumps(json.loads(body), indent=1).encode()
    assert post_webhook(client, path, respaced, sign(raw)).status_code == 401
    keys = RedisKeys(settings.key_prefix)
    shard = shard_of(r, settings, iid)
    assert r.xlen(keys.stream(shard)) == 0
    assert int(r.hget(keys.auth_failures(), iid) or 0) == len(cases) + 1
    log = client.get(f"/v1/integrations/{iid}/deliveries", headers=ADMIN).json()["deliveries"]
    assert {(d["status"], d["path"]) for d in log} == {(401, "webhook")}
    state = client.get(f"/v1/integrations/{iid}", headers=ADMIN).json()
    assert state["auth_failures"] == len(cases) + 1
    assert post_webhook(client, path, raw).status_code == 202


def test_unknown_or_malformed_webhook_ids_are_404(client: TestClient) -> None:
    body = webhook_event("conversation_resolution", str(uuid.uuid4()), T, "g1")
    for webhook_id in ("A" * 32, "short", "x" * 65, "has.dot-but-long-enough"):
        answer = post_webhook(client, "/v1/freshchat/webhooks/" + webhook_id, body)
        assert answer.status_code == 404
        assert answer.json()["reason"] == "not_found"
    assert client.get("/v1/freshchat/webhooks/" + "A" * 32).status_code == 405


def test_other_answers_are_the_events_endpoints(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    path = set_up_webhook(client, iid)
    good = json.dumps(webhook_event("conversation_resolution", str(uuid.uuid4()), T, "g1"))
    text_plain = post_webhook(client, path, good.encode(), **{"Content-Type": "text/plain"})
    assert text_plain.status_code == 415
    assert post_webhook(client, path, b"{not json").status_code == 400
    no_time = webhook_event("conversation_resolution", str(uuid.uuid4()), T, "g1")
    del no_time["action_time"]
    answer = post_webhook(client, path, no_time)
    assert answer.status_code == 400
    assert answer.json()["detail"][0]["loc"] == ["body", "action_time"]
    future = webhook_event("conversation_resolution", str(uuid.uuid4()), 2**42, "g1")
    assert post_webhook(client, path, future).status_code == 400
    huge = b'{"action":"message_create","pad":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    assert post_webhook(client, path, huge).status_code == 413
    log = client.get(f"/v1/integrations/{iid}/deliveries", headers=ADMIN).json()["deliveries"]
    assert [d["status"] for d in log] == [413, 400, 400, 400, 415]
    assert {d["path"] for d in log} == {"webhook"}
    assert r.xlen(RedisKeys(settings.key_prefix).stream(shard_of(r, settings, iid))) == 0


def test_a_resolutions_group_comes_in_the_order_section_12_gives(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    path = set_up_webhook(client, iid)
    _name_groups(r, settings, iid, g1="Customer Support", g2="Billing", g3="Sales")
    own, assigned, latest, unassigned = (str(uuid.uuid4()) for _ in range(4))
    sent = [
        # 1. The resolution's own group wins over any assignment.
        webhook_event("conversation_assignment", own, T - 5 * MINUTE, "g2"),
        webhook_event("conversation_resolution", own, T, "g1"),
        # 2. Else the chat's latest assignment seen (by its time, whatever the order).
        webhook_event("conversation_assignment", assigned, T - 5 * MINUTE, "g2"),
        webhook_event("conversation_resolution", assigned, T, None),
        webhook_event("conversation_assignment", latest, T - 2 * MINUTE, "g3"),
        webhook_event("conversation_assignment", latest, T - 9 * MINUTE, "g2"),
        webhook_event("conversation_resolution", latest, T, None),
        # An assignment to no group: the chat has none.
        webhook_event("conversation_assignment", unassigned, T - 9 * MINUTE, "g2"),
        webhook_event("conversation_assignment", unassigned, T - 1 * MINUTE, None),
        webhook_event("conversation_resolution", unassigned, T, None),
    ]
    for body in sent:
        assert post_webhook(client, path, body).status_code == 202
    assert _counted(r, settings, iid) == {
        ("2026-11-23T08:00Z", "Customer Support"): 1,
        ("2026-11-23T08:00Z", "Billing"): 1,
        ("2026-11-23T08:00Z", "Sales"): 1,
        ("2026-11-23T08:00Z", "Undefined_Queue"): 1,
    }
    assert _explain(client, iid, own)["why"]["code"] == "group_name_learnt"
    assert _explain(client, iid, assigned)["why"]["code"] == "group_from_assignment"
    assert _explain(client, iid, latest)["queue"] == "Sales"
    assert _explain(client, iid, unassigned)["why"]["code"] == "no_group"


def test_a_resolution_waits_for_an_assignment_or_freshchat(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    path = set_up_webhook(client, iid)
    _name_groups(r, settings, iid, g2="Billing")
    chat = str(uuid.uuid4())
    assert post_webhook(client, path, webhook_event("conversation_resolution", chat, T)).is_success
    assert _counted(r, settings, iid) == {}
    assert _explain(client, iid, chat)["why"]["code"] == "waiting_for_chat_group"
    # An assignment delivered late still names the group before Freshchat is asked.
    late = webhook_event("conversation_assignment", chat, T - MINUTE, "g2")
    assert post_webhook(client, path, late).status_code == 202
    assert _counted(r, settings, iid) == {("2026-11-23T08:00Z", "Billing"): 1}
    assert _explain(client, iid, chat)["why"]["code"] == "group_from_assignment"


def test_retries_and_duplicates_count_once(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    path = set_up_webhook(client, iid)
    _name_groups(r, settings, iid, g1="Customer Support")
    body = webhook_event("conversation_resolution", str(uuid.uuid4()), T, "g1")
    for retry in ("", "1", "2", "3"):
        headers = {"X-Retry-Count": retry} if retry else {}
        assert post_webhook(client, path, body, **headers).status_code == 202
    assert _counted(r, settings, iid) == {("2026-11-23T08:00Z", "Customer Support"): 1}


def test_a_chat_seen_on_both_paths_is_one_contact(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(client)
    path = set_up_webhook(client, iid)
    same, earlier = str(uuid.uuid4()), str(uuid.uuid4())
    # The app's event names the group (and teaches its name); the webhook names its id.
    assert post_events(client, key, conv_event(same, "resolved", T, G1)).status_code == 202
    assert post_webhook(client, path, webhook_event("conversation_resolution", same, T, "g1"))
    # The webhook saw the resolution first: the chat moves to that earlier interval.
    assert post_events(client, key, conv_event(earlier, "resolved", T, G1)).status_code == 202
    first = webhook_event("conversation_resolution", earlier, T - 30 * MINUTE, "g1")
    assert post_webhook(client, path, first).status_code == 202
    assert _counted(r, settings, iid) == {
        ("2026-11-23T08:00Z", "Customer Support"): 1,
        ("2026-11-23T07:30Z", "Customer Support"): 1,
    }
    paths = {d["path"] for d in _explain(client, iid, same)["deliveries"]}
    assert paths == {"app", "webhook"}


NAMES = {"g1": "Customer Support", "g2": "Billing | Tier 2: 🇩🇪", "g3": "Sales: 🚀"}
webhook_spec = st.tuples(
    st.sampled_from(["c1", "c2", "c3", "c4"]),
    st.sampled_from(
        ["conversation_resolution", "conversation_assignment", "conversation_reopen", "other"]
    ),
    st.integers(0, 3 * 3600),  # seconds after 08:00
    st.sampled_from(sorted(NAMES)),
)


def _oracle(specs: list[tuple[str, str, int, str]]) -> dict[tuple[str, str], int]:
    """§4 on this path: each chat once, at its earliest resolution (ties: smaller name)."""
    best: dict[str, tuple[int, str]] = {}
    for chat, action, offset, gid in specs:
        if action == "conversation_resolution":
            when = at("2026-11-23T08:00") + offset * 1000
            best[chat] = min(best.get(chat, (when, NAMES[gid])), (when, NAMES[gid]))
    out: dict[tuple[str, str], int] = {}
    for when, queue in best.values():
        key = (iso(when - when % 900_000)[:16] + "Z", queue)
        out[key] = out.get(key, 0) + 1
    return out


@hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=st.lists(webhook_spec, min_size=1, max_size=14), data=st.data())
def test_resolutions_carrying_their_group_count_the_same_in_any_order(
    client: TestClient, r: redis.Redis, settings: Settings, specs: list[Any], data: st.DataObject
) -> None:
    iid, _ = create_integration(client, name=f"Prop {uuid.uuid4()}")
    path = set_up_webhook(client, iid)
    _name_groups(r, settings, iid, **NAMES)
    chats = {c: str(uuid.uuid4()) for c in ("c1", "c2", "c3", "c4")}
    bodies = [
        orjson.dumps(webhook_event(a, chats[c], at("2026-11-23T08:00") + s * 1000, g))
        for c, a, s, g in specs
    ]
    extra = data.draw(st.lists(st.integers(0, len(bodies) - 1), max_size=len(bodies)))
    order = data.draw(st.permutations(list(range(len(bodies))) + extra))
    split = data.draw(st.integers(0, len(order)))
    for n, i in enumerate(order):
        if n == split:
            _counted(r, settings, iid)  # some applied before the rest arrive
        assert post_webhook(client, path, bodies[i]).status_code == 202
    assert _counted(r, settings, iid) == _oracle(specs)
