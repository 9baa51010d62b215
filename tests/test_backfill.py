"""The backfill (§13) against the Extract stand-in, in-process: exact counts through the real
apply script, merging with live events, the Freshchat flow's failure modes and secrets."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from app.backfills import Backfills
from app.integrations import Integrations
from app.lua import UNDEFINED_QUEUE
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.backfill_support import (
    backfill_settings,
    day_start_ms,
    days_ago,
    expected_counts,
    new_integration,
    random_rows,
    slot_iso,
    today,
)
from tests.extract_standin import ExtractRow, ExtractStandIn, Part, halves, running
from tests.support import ROOT, all_stored_bytes, apply_all, conv_event, counts, store
from workers.backfill import Backfiller
from workers.backfill_progress import Progress
from workers.drain import Drainer

FIXTURES = ROOT.parent / "shared" / "fixtures" / "freshchat-extract"


@pytest.fixture
def fc() -> Iterator[ExtractStandIn]:
    """The stand-in Freshchat (API and download host)."""
    with running() as standin:
        yield standin


@pytest.fixture
def bs(settings: Settings) -> Settings:
    """Settings for backfills on the session's Redis."""
    return backfill_settings(settings.redis_url)


class FakeTime:
    """A clock that only moves when slept on; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def backfiller(settings: Settings, r: redis.Redis, **kwargs: Any) -> Backfiller:
    """The worker's Backfiller on this Redis, polling quickly."""
    b = Backfiller.build(settings, r)
    b.poll_first_s, b.poll_max_s = 0.01, 0.05
    for name, value in kwargs.items():
        setattr(b, name, value)
    return b


def import_range(
    settings: Settings, r: redis.Redis, iid: str, first: str, last: str, **kwargs: Any
) -> dict[str, Any]:
    """Create a backfill and run it to its end in this process."""
    created = Backfills(r, settings).create(iid, {"from": first, "to": last})
    b = backfiller(settings, r, **kwargs)
    try:
        return b.run(iid, created["backfill_id"], wait_inline=True)
    finally:
        b.close()


def test_counts_exact_and_downloads_never_carry_authorization(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rows = random_rows(random.Random(1), today() - timedelta(days=12), 12, 1500)
    fc.script.rows = rows
    integration = new_integration(bs, fc)
    done = import_range(bs, r, integration.id, days_ago(12), days_ago(1))
    assert done["state"] == "done", done
    assert (done["windows_total"], done["windows_done"]) == (2, 2)
    assert (done["rows_read"], done["rows_skipped"], done["chats_counted"]) == (
        len(rows),
        0,
        len(rows),
    )
    assert done["finished_at"] and done["eta_seconds"] == 0 and done["error"] is None
    apply_all(r, bs, integration.shard)
    assert counts(r, bs, integration.id, integration.shard) == expected_counts(rows)
    # Every download came without Authorization, from another host than the API, both
    # kinds (ZIP and CSV) served; every API call carried the key.
    downloads = fc.of("download")
    assert {q.path.rsplit(".", 1)[1] for q in downloads} == {"zip", "csv"}
    assert all("authorization" not in q.headers for q in downloads)
    api_calls = fc.of("submit") + fc.of("poll")
    assert all(q.headers["authorization"] == f"Bearer {fc.script.api_key}" for q in api_calls)
    # Neither the key nor a link's signature is stored or logged.
    signatures = {q.query["sig"][0] for q in downloads}
    stored = all_stored_bytes(r)
    for secret in [fc.script.api_key, *signatures]:
        assert secret.encode() not in stored
        assert secret not in caplog.text
    assert "downloaded" in caplog.text


def test_fixture_downloads_zip_and_csv_with_one_malformed_row(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    """The shared fixtures served as they are: one window, a ZIP of two CSVs and a CSV."""
    parts = [
        Part("part-1.zip", (FIXTURES / "part-1.zip").read_bytes()),
        Part("part-2.csv", (FIXTURES / "part-2.csv").read_bytes()),
    ]
    fc.script.layout = lambda start, end, rows: parts if start.startswith("2026-11-02") else []
    integration = new_integration(bs, fc)
    settings = bs.model_copy(update={"backfill_window_days": 7})
    done = import_range(settings, r, integration.id, "2026-11-02", "2026-11-08")
    assert done["state"] == "done", done
    assert (done["rows_read"], done["rows_skipped"], done["chats_counted"]) == (111, 1, 110)
    assert json.loads(fc.of("submit")[0].body) == {
        "start": "2026-11-02T00:00:00.000Z",
        "end": "2026-11-08T23:59:59.999Z",
        "event": "Conversation-Resolved",
        "format": "csv",
    }
    apply_all(r, bs, integration.shard)
    got = counts(r, bs, integration.id, integration.shard)
    assert sum(got.values()) == 110
    assert got[("2026-11-08T05:15Z", UNDEFINED_QUEUE)] >= 1  # a time without offset, as UTC
    assert set(q for _, q in got) == {"Billing", "Customer Support", UNDEFINED_QUEUE}


def test_the_same_backfill_twice_changes_nothing(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    rows = random_rows(random.Random(2), today() - timedelta(days=5), 5, 400)
    fc.script.rows = rows
    integration = new_integration(bs, fc)
    shard, keys = integration.shard, RedisKeys(bs.key_prefix)
    assert import_range(bs, r, integration.id, days_ago(5), days_ago(1))["state"] == "done"
    apply_all(r, bs, shard)
    first = counts(r, bs, integration.id, shard)
    revision = r.hget(keys.revisions(shard), "#")
    again = import_range(bs, r, integration.id, days_ago(5), days_ago(1))
    assert again["state"] == "done" and again["chats_counted"] == len(rows)
    assert apply_all(r, bs, shard) == len(rows)
    assert counts(r, bs, integration.id, shard) == first == expected_counts(rows)
    assert r.hget(keys.revisions(shard), "#") == revision  # not one count moved
    assert [b["state"] for b in Backfills(r, bs).list(integration.id)] == ["done", "done"]


def test_imported_and_live_chats_are_one_contact_at_the_earliest_time(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    day = day_start_ms(today() - timedelta(days=1))
    early, late = str(uuid.uuid4()), str(uuid.uuid4())
    fc.script.rows = [
        ExtractRow(early, day + 9 * 3600_000, "g-1", "Customer Support"),
        ExtractRow(late, day + 9 * 3600_000, "g-1", "Customer Support"),
    ]
    integration = new_integration(bs, fc)
    iid, shard = integration.id, integration.shard
    # Live: `late` was solved again later (changes nothing), `early` was solved earlier.
    store(
        r, bs, iid, shard, [conv_event(late, "resolved", day + 11 * 3600_000, ("g-2", "Billing"))]
    )
    apply_all(r, bs, shard)
    assert import_range(bs, r, iid, days_ago(1), days_ago(1))["state"] == "done"
    apply_all(r, bs, shard)
    store(
        r, bs, iid, shard, [conv_event(early, "resolved", day + 8 * 3600_000, ("g-2", "Billing"))]
    )
    store(
        r, bs, iid, shard, [conv_event(late, "resolved", day + 10 * 3600_000, ("g-2", "Billing"))]
    )
    apply_all(r, bs, shard)
    assert counts(r, bs, iid, shard) == {
        (slot_iso(day + 8 * 3600_000), "Billing"): 1,
        (slot_iso(day + 9 * 3600_000), "Customer Support"): 1,
    }


def test_group_id_without_name_is_named_by_the_group_resolver(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    day = day_start_ms(today() - timedelta(days=2))
    fc.script.rows = [ExtractRow(str(uuid.uuid4()), day + n * 60_000, "g-77", "") for n in range(5)]
    fc.script.groups = {"g-77": "Escalations (Tier 2)"}
    integration = new_integration(bs, fc)
    assert import_range(bs, r, integration.id, days_ago(2), days_ago(2))["state"] == "done"
    drainer = Drainer.build(bs, r)
    try:
        for _ in range(5):
            drainer.drain(integration.shard)
    finally:
        drainer.close()
    assert counts(r, bs, integration.id, integration.shard) == {
        (slot_iso(day), "Escalations (Tier 2)"): 5
    }
    assert fc.of("groups")


def test_an_expired_link_is_fetched_again_after_a_fresh_poll(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    rows = random_rows(random.Random(3), today() - timedelta(days=3), 3, 200)
    fc.script.rows = rows
    first_part = fc.script.layout(f"{days_ago(3)}T00", "", [])[0].name
    fc.script.expire_once = {first_part}
    integration = new_integration(bs, fc)
    done = import_range(bs, r, integration.id, days_ago(3), days_ago(1))
    assert done["state"] == "done" and done["rows_read"] == len(rows), done
    statuses = [(q.path.rsplit("/", 1)[1], q.query["sig"][0]) for q in fc.of("download")]
    assert statuses[0][0] == statuses[1][0] == first_part
    assert statuses[0][1] != statuses[1][1]  # a fresh link, from a poll in between
    apply_all(r, bs, integration.shard)
    assert counts(r, bs, integration.id, integration.shard) == expected_counts(rows)


def test_429_retry_after_is_honoured_and_5xx_backs_off(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    fc.script.rows = random_rows(random.Random(4), today() - timedelta(days=2), 2, 50)
    fc.force("submit", 429, retry_after="7")
    fc.force("poll", 503, times=3)
    fc.force("download", 502)
    fake = FakeTime()
    integration = new_integration(bs, fc)
    done = import_range(
        bs, r, integration.id, days_ago(2), days_ago(1), clock=fake.clock, sleep=fake.sleep
    )
    assert done["state"] == "done", done
    assert len(fc.of("submit")) == 2
    waited = fake.sleeps
    assert sum(waited[: waited.index(0.01) if 0.01 in waited else len(waited)]) >= 7
    # Backoff doubles over the three 503s (1, 2, 4 s), then starts again for the 502.
    assert sum(waited) >= 7 + 1 + 2 + 4 + 1


def test_a_window_that_failed_three_times_fails_the_backfill(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    first = today() - timedelta(days=10)
    fc.script.rows = random_rows(random.Random(5), first, 10, 100)
    fc.script.fail_reports = {first.isoformat(): 3, (first + timedelta(days=7)).isoformat(): 1}
    integration = new_integration(bs, fc)
    done = import_range(bs, r, integration.id, days_ago(10), days_ago(1))
    assert done["state"] == "failed"
    assert done["error"] == (
        f"Freshchat failed the report for {first}..{first + timedelta(days=6)} 3 times"
    )
    assert done["windows_done"] == 0 and len(fc.of("submit")) == 3
    # Once is not enough: the other window's single FAILED is asked again and imported.
    fc.script.fail_reports = {(first + timedelta(days=7)).isoformat(): 1}
    again = import_range(bs, r, integration.id, days_ago(3), days_ago(1))
    assert again["state"] == "done" and len(fc.of("submit")) == 5


def test_reports_are_submitted_no_faster_than_the_spacing(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    settings = bs.model_copy(
        update={"backfill_submit_every_seconds": 0.6, "backfill_window_days": 1}
    )
    integration = new_integration(settings, fc)
    assert import_range(settings, r, integration.id, days_ago(3), days_ago(1))["state"] == "done"
    times = [q.at for q in fc.of("submit")]
    assert len(times) == 3
    assert all(b - a >= 0.55 for a, b in itertools.pairwise(times))


def test_a_rejected_key_or_unreadable_download_fails_with_the_reason(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    integration = new_integration(bs, fc)
    fc.force("submit", 401)
    done = import_range(bs, r, integration.id, days_ago(1), days_ago(1))
    assert done["state"] == "failed" and "rejected the API key" in done["error"]
    fc.script.layout = lambda start, end, rows: [Part("odd.csv", b"id,when\n1,2\n")]
    done = import_range(bs, r, integration.id, days_ago(1), days_ago(1))
    assert done["state"] == "failed" and "no conversation id column" in done["error"]


def test_cancel_stops_a_running_backfill_between_steps(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    fc.script.pending_polls = 10_000
    integration = new_integration(bs, fc)
    backfills = Backfills(r, bs)
    bid = backfills.create(integration.id, {"from": days_ago(3), "to": days_ago(1)})["backfill_id"]
    result: dict[str, Any] = {}
    b = backfiller(bs, r)
    worker = threading.Thread(
        target=lambda: result.update(b.run(integration.id, bid, wait_inline=True))
    )
    worker.start()
    deadline = time.monotonic() + 10
    while len(fc.of("poll")) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backfills.get(integration.id, bid)["state"] == "running"
    backfills.cancel(integration.id, bid)  # a job holds it: it stops at its next step
    worker.join(timeout=10)
    b.close()
    assert not worker.is_alive() and result["state"] == "cancelled"
    assert result["finished_at"] is not None
    # The integration is free for the next backfill.
    assert (
        backfills.create(integration.id, {"from": days_ago(1), "to": days_ago(1)})["state"]
        == "queued"
    )


def test_a_job_hands_over_after_its_budget_and_waits_without_sleeping(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    """An RQ job never sleeps through a wait: it records when to go on and ends."""
    fc.script.rows = random_rows(random.Random(6), today() - timedelta(days=2), 2, 30)
    integration = new_integration(bs, fc)
    backfills = Backfills(r, bs)
    bid = backfills.create(integration.id, {"from": days_ago(2), "to": days_ago(1)})["backfill_id"]
    b = backfiller(bs, r, poll_first_s=30.0)
    began = time.monotonic()
    step = b.run(integration.id, bid)
    assert time.monotonic() - began < 5 and step["state"] == "running"
    record = backfills.raw(integration.shard, integration.id, bid)
    assert record is not None and float(record["next_at"]) > time.time() + 20 and not record["job"]
    assert b.run(integration.id, bid)["windows_done"] == 0  # not due yet: nothing done
    b.close()
    assert len(fc.of("submit")) == 1 and not fc.of("poll")


def test_a_crash_between_chunks_redoes_the_link_and_counts_each_row_once(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = random_rows(random.Random(7), today() - timedelta(days=1), 1, 2500)
    fc.script.rows = rows
    integration = new_integration(bs, fc)
    backfills = Backfills(r, bs)
    bid = backfills.create(integration.id, {"from": days_ago(1), "to": days_ago(1)})["backfill_id"]
    crashing = backfiller(bs, r)
    append = Progress.append

    def dies_after_one_chunk(self: Progress, rows: Any, reader: Any) -> None:
        append(self, rows, reader)
        raise RuntimeError("the worker died here")

    monkeypatch.setattr(Progress, "append", dies_after_one_chunk)
    with pytest.raises(RuntimeError):
        crashing.run(integration.id, bid, wait_inline=True)
    crashing.close()
    monkeypatch.undo()
    partial = backfills.get(integration.id, bid)
    assert partial["state"] == "running" and partial["rows_read"] == 1000
    assert backfills.raw(integration.shard, integration.id, bid)["backoff"] == "1"  # type: ignore[index]
    done = import_again(bs, r, integration.id, bid)
    assert (done["rows_read"], done["chats_counted"]) == (len(rows), len(rows)), done
    apply_all(r, bs, integration.shard)
    assert counts(r, bs, integration.id, integration.shard) == expected_counts(rows)


def import_again(settings: Settings, r: redis.Redis, iid: str, bid: str) -> dict[str, Any]:
    """Run an existing backfill to its end with a new Backfiller."""
    b = backfiller(settings, r)
    try:
        return b.run(iid, bid, wait_inline=True)
    finally:
        b.close()


def test_a_report_freshchat_forgot_is_asked_again_and_progress_stays_exact(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    rows = random_rows(random.Random(8), today() - timedelta(days=1), 1, 600)
    fc.script.rows, fc.script.layout = rows, halves
    forgotten: list[bool] = []

    def forget_once() -> None:  # after the first download: the report is gone (404)
        if not forgotten:
            forgotten.append(True)
            fc.force("poll", 404)

    fc.script.after_download = forget_once
    integration = new_integration(bs, fc)
    done = import_range(bs, r, integration.id, days_ago(1), days_ago(1))
    assert done["state"] == "done", done
    assert (done["rows_read"], done["chats_counted"]) == (len(rows), len(rows))
    assert len(fc.of("submit")) == 2 and len(fc.of("download")) == 3
    apply_all(r, bs, integration.shard)
    assert counts(r, bs, integration.id, integration.shard) == expected_counts(rows)


def test_deleting_the_integration_cancels_its_backfill(
    bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    integration = new_integration(bs, fc)
    backfills = Backfills(r, bs)
    bid = backfills.create(integration.id, {"from": days_ago(3), "to": days_ago(1)})["backfill_id"]

    async def delete() -> None:
        client = AsyncRedis.from_url(bs.redis_url)
        try:
            await Integrations(client, bs).delete(integration.id)
        finally:
            await client.aclose()

    asyncio.run(delete())
    b = backfiller(bs, r)
    result = b.run(integration.id, bid, wait_inline=True)
    b.close()
    assert (result["state"], result["error"]) == ("cancelled", "the integration was deleted")
    assert fc.of("submit") == []  # nothing asked of Freshchat for a deleted integration
