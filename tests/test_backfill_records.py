"""Backfill records (§13): validation naming the field, one at a time (409), list, get,
cancel, the async variant, the janitor's scheduling and the RQ job shim."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from app.backfills import (
    AsyncBackfills,
    BackfillKeys,
    Backfills,
    parse_range,
    schedule_backfills,
    view,
    windows,
)
from app.errors import BadRequest, Conflict, NotFound
from app.integration import Integration
from app.settings import Settings
from tests.backfill_support import (
    backfill_settings,
    days_ago,
    expected_counts,
    new_integration,
    random_rows,
    today,
)
from tests.extract_standin import ExtractStandIn, running
from tests.support import counts, pending
from workers.backfill import Backfiller, serving
from workers.drain import Drainer
from workers.drain import serving as serving_drains

TODAY = date(2026, 11, 29)


@pytest.fixture
def fc() -> Iterator[ExtractStandIn]:
    """The stand-in Freshchat."""
    with running() as standin:
        yield standin


@pytest.fixture
def bs(settings: Settings) -> Settings:
    """Settings for backfills on the session's Redis."""
    return backfill_settings(settings.redis_url)


@pytest.fixture
def acme(bs: Settings, fc: ExtractStandIn) -> Integration:
    """An integration on the stand-in."""
    return new_integration(bs, fc)


def bad(body: object, retention: int = 400) -> BadRequest:
    """The BadRequest that parse_range raises for this body."""
    with pytest.raises(BadRequest) as caught:
        parse_range(body, TODAY, retention)
    return caught.value


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"to": "2026-11-01"}, "from", "from is required"),
        ({"from": "2026-11-01"}, "to", "to is required"),
        ({"from": "2026-11-1", "to": "2026-11-02"}, "from", "YYYY-MM-DD"),
        ({"from": "2026-11-01", "to": "2026-02-30"}, "to", "YYYY-MM-DD"),
        ({"from": 20261101, "to": "2026-11-02"}, "from", "YYYY-MM-DD"),
        ({"from": "2026-11-01T00:00:00Z", "to": "2026-11-02"}, "from", "YYYY-MM-DD"),
        ({"from": "2026-11-01", "to": "2026-11-30"}, "to", "in the future"),
        ({"from": "2026-12-01", "to": "2026-12-02"}, "from", "in the future"),
        (
            {"from": "2026-11-20", "to": "2026-11-10"},
            "from",
            "from (2026-11-20) is after to (2026-11-10)",
        ),
        ({"from": "2025-10-25", "to": "2026-11-10"}, "from", "retention (400 days)"),
        ({"from": "2026-11-01", "to": "2026-11-02", "days": 3}, "days", "unknown field"),
    ],
)
def test_bad_input_names_the_field(body: dict[str, Any], field: str, words: str) -> None:
    error = bad(body)
    assert words in error.message
    assert error.status == 400 and error.detail[0]["loc"] == ["body", field]


def test_not_an_object() -> None:
    assert bad(["2026-11-01", "2026-11-02"]).detail[0]["loc"] == ["body"]


def test_valid_ranges_and_windows() -> None:
    assert parse_range({"from": "2026-11-29", "to": "2026-11-29"}, TODAY, 400) == (TODAY, TODAY)
    earliest = TODAY - timedelta(days=399)
    assert (
        parse_range({"from": earliest.isoformat(), "to": "2026-11-01"}, TODAY, 400)[0] == earliest
    )
    got = windows(date(2026, 11, 1), date(2026, 11, 28), 7)
    assert got == [(date(2026, 11, d), date(2026, 11, d + 6)) for d in (1, 8, 15, 22)]
    assert windows(date(2026, 11, 1), date(2026, 11, 9), 7)[-1] == (
        date(2026, 11, 8),
        date(2026, 11, 9),
    )


def test_create_list_get_and_one_at_a_time(bs: Settings, r: redis.Redis, acme: Integration) -> None:
    backfills = Backfills(r, bs)
    first = backfills.create(acme.id, {"from": days_ago(27), "to": days_ago(0)})
    assert first["state"] == "queued" and first["windows_total"] == 4 and first["windows_done"] == 0
    assert set(first) >= {
        "backfill_id", "state", "from", "to", "windows_total", "windows_done", "rows_read",
        "rows_skipped", "chats_counted", "started_at", "finished_at", "eta_seconds", "error",
    }  # fmt: skip
    with pytest.raises(Conflict) as caught:
        backfills.create(acme.id, {"from": days_ago(3), "to": days_ago(1)})
    assert caught.value.status == 409 and first["backfill_id"] in caught.value.message
    assert caught.value.detail == [{"backfill_id": first["backfill_id"], "state": "queued"}]
    assert backfills.get(acme.id, first["backfill_id"]) == first
    # The job is in RQ's queue, by dotted path.
    job = Queue(bs.rq_queue, connection=r).jobs[-1]
    assert job.func_name == "workers.backfill.run_backfill"
    assert job.args == (acme.id, first["backfill_id"])
    assert backfills.cancel(acme.id, first["backfill_id"])["state"] == "cancelled"
    second = backfills.create(acme.id, {"from": days_ago(3), "to": days_ago(1)})
    assert [b["backfill_id"] for b in backfills.list(acme.id)] == [
        second["backfill_id"],
        first["backfill_id"],
    ]


def test_concurrent_creates_start_one_backfill(
    bs: Settings, r: redis.Redis, acme: Integration
) -> None:
    def create(_: int) -> str:
        client = redis.Redis.from_url(bs.redis_url)
        try:
            Backfills(client, bs).create(acme.id, {"from": days_ago(2), "to": days_ago(1)})
            return "created"
        except Conflict:
            return "conflict"
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(create, range(8)))
    assert outcomes == ["conflict"] * 7 + ["created"]
    assert len(Backfills(r, bs).list(acme.id)) == 1


def test_not_found_and_finished(bs: Settings, r: redis.Redis, acme: Integration) -> None:
    backfills = Backfills(r, bs)
    with pytest.raises(NotFound):
        backfills.create("nosuchthing", {"from": days_ago(1), "to": days_ago(1)})
    with pytest.raises(NotFound):
        backfills.get(acme.id, "nosuchbackfill")
    with pytest.raises(NotFound):
        backfills.cancel(acme.id, "nosuchbackfill")
    with pytest.raises(NotFound):
        backfills.list("nosuchthing")
    bid = backfills.create(acme.id, {"from": days_ago(1), "to": days_ago(1)})["backfill_id"]
    assert backfills.cancel(acme.id, bid)["state"] == "cancelled"
    assert backfills.cancel(acme.id, bid)["state"] == "cancelled"  # again: the same answer
    with pytest.raises(BadRequest):
        backfills.create(acme.id, {"from": days_ago(-1), "to": days_ago(-1)})


def test_a_stale_claim_does_not_block(bs: Settings, r: redis.Redis, acme: Integration) -> None:
    """A claim whose record finished (or never got written) is not a running backfill."""
    keys, backfills = BackfillKeys(bs.key_prefix), Backfills(r, bs)
    r.set(keys.active(acme.shard, acme.id), "ghost")
    assert backfills.create(acme.id, {"from": days_ago(1), "to": days_ago(1)})["state"] == "queued"


def test_keys_carry_the_shard_hash_tag(bs: Settings) -> None:
    keys = BackfillKeys("ifc")
    for key in (
        keys.record(5, "acme", "b1"),
        keys.listing(5, "acme"),
        keys.active(5, "acme"),
        keys.lease(5, "acme"),
        keys.submitted(5, "acme"),
        keys.scheduling(5, "acme"),
    ):
        assert key.startswith("ifc:{5}:bf")


def test_async_variant(bs: Settings, r: redis.Redis, acme: Integration) -> None:
    async def go() -> list[dict[str, Any]]:
        backfills = AsyncBackfills(Backfills(r, bs))
        created = await backfills.create(acme.id, {"from": days_ago(2), "to": days_ago(1)})
        assert (await backfills.get(acme.id, created["backfill_id"]))["state"] == "queued"
        await backfills.cancel(acme.id, created["backfill_id"])
        return await backfills.list(acme.id)

    assert [b["state"] for b in asyncio.run(go())] == ["cancelled"]


def test_eta_from_the_windows_done() -> None:
    now = 1_000_000.0
    record = {
        "state": "running",
        "windows_total": "4",
        "windows_done": "1",
        "started_at": str(now - 30),
    }
    assert view(record, now)["eta_seconds"] == 90
    assert view({**record, "windows_done": "0"}, now)["eta_seconds"] is None
    assert view({**record, "l_read": "5", "rows_read": "10"}, now)["rows_read"] == 15


def test_the_janitor_enqueues_what_is_due_and_no_live_job_holds(
    bs: Settings, r: redis.Redis, acme: Integration, fc: ExtractStandIn
) -> None:
    backfills, keys = Backfills(r, bs), BackfillKeys(bs.key_prefix)
    bid = backfills.create(acme.id, {"from": days_ago(1), "to": days_ago(1)})["backfill_id"]
    assert schedule_backfills(r, bs) == []  # its job is queued
    Queue(bs.rq_queue, connection=r).empty()  # type: ignore[no-untyped-call]  # a lost job
    assert schedule_backfills(r, bs) == [bid]
    r.delete(keys.scheduling(acme.shard, acme.id))
    record = keys.record(acme.shard, acme.id, bid)
    r.hset(record, "next_at", str(time.time() + 60))
    Queue(bs.rq_queue, connection=r).empty()  # type: ignore[no-untyped-call]
    assert schedule_backfills(r, bs) == []  # not due yet
    r.hset(record, "next_at", "0")
    r.set(keys.lease(acme.shard, acme.id), "someone", px=10_000)
    assert schedule_backfills(r, bs) == []  # a live job holds it
    r.delete(keys.lease(acme.shard, acme.id), keys.scheduling(acme.shard, acme.id))
    assert schedule_backfills(r, bs) == [bid]
    Queue(bs.rq_queue, connection=r).empty()  # type: ignore[no-untyped-call]
    assert schedule_backfills(r, bs) == []  # another janitor just enqueued one
    backfills.cancel(acme.id, bid)
    assert schedule_backfills(r, bs) == [] and not r.sismember(keys.index(), acme.id)


def test_rq_jobs_run_the_backfill_to_its_end(
    bs: Settings, r: redis.Redis, acme: Integration, fc: ExtractStandIn
) -> None:
    """The job shims in an RQ worker (backfill steps, continued by the janitor between
    waits, and the drains they enqueue): every imported chat counted."""
    fc.script.rows = random_rows(random.Random(9), today() - timedelta(days=2), 2, 300)
    backfills = Backfills(r, bs)
    bid = backfills.create(acme.id, {"from": days_ago(2), "to": days_ago(1)})["backfill_id"]
    backfiller, drainer = Backfiller.build(bs, r), Drainer.build(bs, r)
    backfiller.poll_first_s = 0.05
    queue = Queue(bs.rq_queue, connection=r)
    deadline = time.monotonic() + 30
    with serving(backfiller), serving_drains(drainer):
        while backfills.get(acme.id, bid)["state"] != "done" or pending(r, bs):
            assert time.monotonic() < deadline, backfills.get(acme.id, bid)
            SimpleWorker([queue], connection=r).work(burst=True)
            time.sleep(0.06)
            schedule_backfills(r, bs)
    backfiller.close()
    drainer.close()
    assert counts(r, bs, acme.id, acme.shard) == expected_counts(fc.script.rows)
    registry = FinishedJobRegistry(queue=queue).get_job_ids()
    assert sum(j.startswith(f"backfill-{bid}-") for j in registry) >= 2
    assert any(j.startswith(f"drain-{acme.shard}-") for j in registry)
    assert not FailedJobRegistry(queue=queue).get_job_ids()


def test_today_helper_is_utc() -> None:
    assert today().isoformat() == days_ago(0)
