"""Revisions, the changes feed and `applied_through` (§6): an importer that follows the
feed holds exactly the server's counts; a read never claims an event still pending."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.main import create_app
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from tests.support import (
    READER,
    apply_all,
    at,
    conv_event,
    create_integration,
    post_events,
    shard_of,
    store,
)

DAY = ("2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z")
G1, G2 = ("g1", "Support"), ("g2", "Billing")
Copy = dict[tuple[str, str], int]


def read(client: TestClient, iid: str, start: str, end: str) -> dict[str, Any]:
    answer = client.get(
        f"/v1/integrations/{iid}/contacts?from={start}&to={end}&interval=15", headers=READER
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def rows(body: dict[str, Any]) -> Copy:
    return {(row["interval_start"], row["queue"]): row["contacts"] for row in body["rows"]}


def changes(client: TestClient, iid: str, since: str) -> dict[str, Any]:
    answer = client.get(f"/v1/integrations/{iid}/changes?since={since}", headers=READER)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def solved(chat: str, when: str, group: tuple[str, str] | None = G1) -> dict[str, Any]:
    return conv_event(chat, "resolved", at(when), group)


def test_a_late_earlier_event_is_listed_as_two_changed_intervals(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    shard = shard_of(r, settings, iid)
    store(
        r, settings, iid, shard, [solved("a", "2026-11-23T08:20"), solved("b", "2026-11-23T09:05")]
    )
    apply_all(r, settings, shard)
    first = read(client, iid, *DAY)
    assert rows(first) == {
        ("2026-11-23T08:15:00Z", "Support"): 1,
        ("2026-11-23T09:00:00Z", "Support"): 1,
    }
    assert changes(client, iid, first["revision"])["changes"] == []
    # A re-delivered earlier terminal event moves chat "a" to 07:50 and to another queue.
    store(r, settings, iid, shard, [solved("a", "2026-11-23T07:50", G2)])
    apply_all(r, settings, shard)
    feed = changes(client, iid, first["revision"])
    assert int(feed["revision"]) > int(first["revision"])
    assert feed["changes"] == [
        {"interval_start": "2026-11-23T07:45:00Z", "queue": "Billing"},
        {"interval_start": "2026-11-23T08:15:00Z", "queue": "Support"},
    ]
    assert changes(client, iid, feed["revision"])["changes"] == []
    assert read(client, iid, *DAY)["revision"] == feed["revision"]


def test_a_batch_records_one_revision_and_each_cell_once(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    shard = shard_of(r, settings, iid)
    before = read(client, iid, *DAY)["revision"]
    minutes = ["08:01", "08:20", "08:40"]  # three 15-minute intervals
    events = [solved(f"c{n}", f"2026-11-23T{minutes[n % 3]}") for n in range(2000)]
    store(r, settings, iid, shard, events)
    apply_all(r, settings, shard, batch=2000)
    feed = changes(client, iid, before)
    assert int(feed["revision"]) == int(before) + 1
    assert [c["interval_start"] for c in feed["changes"]] == [
        "2026-11-23T08:00:00Z",
        "2026-11-23T08:15:00Z",
        "2026-11-23T08:30:00Z",
    ]
    assert r.zcard(RedisKeys(settings.key_prefix).changes(shard)) == 3


def test_malformed_or_unknown_revisions_are_400(client: TestClient) -> None:
    iid, _ = create_integration(client)
    for since in ("", "abc", "-1", "1.5", "9" * 30):
        answer = client.get(f"/v1/integrations/{iid}/changes?since={since}", headers=READER)
        assert answer.status_code == 400 and answer.json()["reason"] == "invalid", since
    ahead = client.get(f"/v1/integrations/{iid}/changes?since=5", headers=READER)
    assert ahead.status_code == 400 and "ahead" in ahead.json()["error"]
    missing = client.get(f"/v1/integrations/{iid}/changes", headers=READER)
    assert missing.status_code == 400
    assert client.get("/v1/integrations/nope/changes?since=0", headers=READER).status_code == 404
    assert client.get(f"/v1/integrations/{iid}/changes?since=0").status_code == 401


def test_changes_older_than_the_retention_are_410(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    shard = shard_of(r, settings, iid)
    keys = RedisKeys(settings.key_prefix)
    for n, when in enumerate(["08:00", "09:00", "10:00"]):
        store(r, settings, iid, shard, [solved(f"c{n}", f"2026-11-23T{when}")])
        apply_all(r, settings, shard)
    # Revision 2 was taken in an hour now older than CHANGES_RETENTION_DAYS (35 days).
    hour = int(time.time() // 3600)
    r.delete(keys.change_hours(shard))
    r.hset(keys.change_hours(shard), str(hour - 35 * 24 - 1), "2")
    store(r, settings, iid, shard, [solved("c9", "2026-11-23T11:00")])
    apply_all(r, settings, shard)  # the hour's first batch drops what is too old
    gone = client.get(f"/v1/integrations/{iid}/changes?since=0", headers=READER)
    assert gone.status_code == 410 and gone.json()["reason"] == "gone"
    assert "re-read the whole range" in gone.json()["error"]
    kept = changes(client, iid, "1")  # every change after revision 1 is still there
    assert [c["interval_start"] for c in kept["changes"]] == [
        "2026-11-23T09:00:00Z",
        "2026-11-23T10:00:00Z",
        "2026-11-23T11:00:00Z",
    ]


def test_applied_through_never_claims_a_pending_event(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(client)
    shard = shard_of(r, settings, iid)
    before = datetime.now(UTC) - timedelta(seconds=1)
    idle = read(client, iid, *DAY)
    after = datetime.now(UTC) + timedelta(seconds=1)
    stamp = datetime.fromisoformat(idle["applied_through"])
    assert before <= stamp <= after  # nothing pending: the time of the answer
    # No worker runs: the event stays pending, and the read says so.
    assert post_events(client, key, solved("p", "2026-11-23T08:00")).status_code == 202
    stream = RedisKeys(settings.key_prefix).stream(shard)
    entries: Any = r.xrange(stream)
    [(entry_id, _)] = entries
    stored_ms = int(text(entry_id).split("-")[0])
    pending = read(client, iid, *DAY)
    claimed = datetime.fromisoformat(pending["applied_through"])
    assert claimed <= datetime.fromtimestamp(stored_ms / 1000, UTC)
    assert rows(pending) == {}
    csv = client.get(
        f"/v1/integrations/{iid}/contacts?from={DAY[0]}&to={DAY[1]}&format=csv", headers=READER
    )
    assert csv.headers["x-applied-through"] == pending["applied_through"]
    assert csv.headers["x-revision"] == pending["revision"]
    apply_all(r, settings, shard)
    done = read(client, iid, *DAY)
    assert datetime.fromisoformat(done["applied_through"]) >= after - timedelta(seconds=1)
    assert rows(done) == {("2026-11-23T08:00:00Z", "Support"): 1}
    # An event parked to wait for its group's name is still not counted: the read says so
    # for its integration (the parked entry keeps its arrival id).
    waits = conv_event("w", "resolved", at("2026-11-23T09:00"), None, group_id_only="g-x")
    assert post_events(client, key, waits).status_code == 202
    stored: Any = r.xrange(stream)
    [(waiting_id, _)] = stored
    apply_all(r, settings, shard)
    assert r.xlen(stream) == 0 and r.xlen(RedisKeys(settings.key_prefix).parked(shard, iid)) == 1
    parked = read(client, iid, *DAY)
    waiting_ms = int(text(waiting_id).split("-")[0])
    assert datetime.fromisoformat(parked["applied_through"]) <= datetime.fromtimestamp(
        waiting_ms / 1000, UTC
    )


def test_from_and_to_are_echoed_normalised(client: TestClient) -> None:
    iid, _ = create_integration(client)
    body = read(client, iid, "2026-11-23T01:00:00%2B01:00", "2026-11-23T02:00:00.000Z")
    assert (body["from"], body["to"]) == ("2026-11-23T00:00:00Z", "2026-11-23T02:00:00Z")


CHATS = [f"chat-{n}" for n in range(5)]
delivery = st.tuples(
    st.sampled_from(CHATS),
    st.sampled_from(["resolved", "resolved", "assigned", "spam"]),
    st.integers(0, 11).map(lambda n: n * 600),  # 10-minute steps over two hours
    st.sampled_from([G1, G2, None]),
)


def follow(client: TestClient, iid: str, copy: Copy, since: str) -> str:
    """Poll the feed and re-read each listed interval, as injixo's importer does."""
    feed = changes(client, iid, since)
    for start in sorted({c["interval_start"] for c in feed["changes"]}):
        end = (datetime.fromisoformat(start) + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
        fresh = rows(read(client, iid, start, end))
        for cell in [c for c in copy if c[0] == start]:
            del copy[cell]
        copy.update(fresh)
    revision: str = feed["revision"]
    return revision


@hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    deliveries=st.lists(delivery, min_size=1, max_size=16),
    data=st.data(),
)
def test_an_importer_that_follows_changes_holds_the_servers_counts(
    client: TestClient,
    r: redis.Redis,
    settings: Settings,
    deliveries: list[Any],
    data: st.DataObject,
) -> None:
    r.flushall()
    iid, _ = create_integration(client)
    shard = shard_of(r, settings, iid)
    extra = data.draw(st.lists(st.integers(0, len(deliveries) - 1), max_size=len(deliveries)))
    order = data.draw(st.permutations(list(range(len(deliveries))) + extra))
    events = [
        conv_event(chat, status, at("2026-11-23T08:00") + offset * 1000, group)
        for chat, status, offset, group in deliveries
    ]
    start = data.draw(st.integers(0, len(order)))
    store(r, settings, iid, shard, [events[i] for i in order[:start]])
    apply_all(r, settings, shard)
    full = read(client, iid, *DAY)
    copy, revision = rows(full), full["revision"]
    rest = order[start:]
    while rest:
        step = data.draw(st.integers(1, len(rest)))
        store(r, settings, iid, shard, [events[i] for i in rest[:step]])
        rest = rest[step:]
        apply_all(r, settings, shard, batch=data.draw(st.integers(1, 5)))
        revision = follow(client, iid, copy, revision)
        assert copy == rows(read(client, iid, *DAY))


def test_integrations_sharing_a_shard_see_only_their_own_changes(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    one = settings.model_copy(update={"shards": 1})
    with TestClient(create_app(one)) as single:
        a, _ = create_integration(single, "A")
        b, _ = create_integration(single, "B")
        start = read(single, a, *DAY)["revision"]
        store(r, one, a, 0, [solved("a1", "2026-11-23T08:00")])
        store(r, one, b, 0, [solved("b1", "2026-11-23T09:00", G2)])
        apply_all(r, one, 0)  # one batch for both
        feed_a, feed_b = changes(single, a, start), changes(single, b, start)
    assert feed_a["revision"] == feed_b["revision"] == str(int(start) + 1)
    assert feed_a["changes"] == [{"interval_start": "2026-11-23T08:00:00Z", "queue": "Support"}]
    assert feed_b["changes"] == [{"interval_start": "2026-11-23T09:00:00Z", "queue": "Billing"}]
