"""A backfill run by real worker processes (§13): one is SIGKILLed mid-import, the next
resumes at the first unfinished window and the counts and progress come out exact."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta

import pytest
import redis
from rq import Queue
from rq.registry import FinishedJobRegistry

from app.backfills import Backfills
from app.settings import Settings
from tests.backfill_support import (
    backfill_settings,
    days_ago,
    expected_counts,
    new_integration,
    random_rows,
    today,
)
from tests.extract_standin import halves, running
from tests.reliability.harness import WATCH, stack
from tests.support import counts, pending, wait_until

pytestmark = pytest.mark.slow

DAYS = 4
GROUPS = [("g-1", "Customer Support"), ("g-2", "Billing"), ("g-9", ""), None]


def test_worker_killed_mid_import_resumes_exact(settings: Settings, r: redis.Redis) -> None:
    bs = backfill_settings(settings.redis_url, backfill_window_days=1)
    env = {"BACKFILL_SUBMIT_EVERY_SECONDS": "0", "BACKFILL_WINDOW_DAYS": "1"}
    rng = random.Random(11)
    rows = random_rows(rng, today() - timedelta(days=DAYS), DAYS, 6000, GROUPS)
    with running() as fc, stack(bs, env) as s:
        fc.script.rows = rows
        fc.script.layout = halves
        fc.script.pending_polls = 0
        fc.script.groups = {"g-9": "Night Shift APAC"}
        fc.script.chunk_delay_s = 0.1  # each download takes ~0.3-0.5 s: a kill lands inside one
        WATCH.add(fc.script.api_key)
        integration = new_integration(bs, fc)
        backfills = Backfills(r, bs)
        bid = backfills.create(integration.id, {"from": days_ago(DAYS), "to": days_ago(1)})[
            "backfill_id"
        ]
        worker = s.worker()
        # Kill in the second link of the second window: its first link is imported, the
        # second is half downloaded.
        second_window = f"/extract-{days_ago(DAYS - 1)}.csv"
        wait_until(
            lambda: any(q.path.endswith(second_window) for q in fc.of("download")),
            60,
            "the second window's second download",
            every=0.005,
        )
        time.sleep(0.05 + rng.random() * 0.2)
        worker.kill()
        killed = backfills.get(integration.id, bid)
        assert killed["state"] == "running" and killed["windows_done"] < DAYS, killed
        submits_before = Counter(q.body for q in fc.of("submit"))
        s.worker()
        wait_until(
            lambda: backfills.get(integration.id, bid)["state"] != "running",
            90,
            "the backfill to end after the kill",
        )
        wait_until(lambda: pending(r, bs) == 0, 60, "every imported chat to be counted")
        done = backfills.get(integration.id, bid)
        assert done["state"] == "done", done
        # Progress counts every row exactly once, despite the rows appended again.
        assert (done["rows_read"], done["rows_skipped"], done["chats_counted"]) == (
            len(rows),
            0,
            len(rows),
        )
        names = {"g-9": "Night Shift APAC"}
        assert counts(r, bs, integration.id, integration.shard) == expected_counts(rows, names)
        # Windows finished before the kill were not asked for again.
        submits = Counter(q.body for q in fc.of("submit"))
        assert len(submits) == DAYS and all(n == 1 for n in submits.values()), submits
        assert sum(submits_before.values()) >= killed["windows_done"]
        downloads = Counter(q.path.rsplit("/", 1)[1] for q in fc.of("download"))
        assert downloads[second_window[1:]] == 2  # the link killed mid-way, again
        assert downloads[second_window[1:].replace(".csv", ".zip")] == 1  # a link done stays done
        assert all("authorization" not in q.headers for q in fc.of("download"))
        # The work ran as RQ jobs, several of them (steps hand over between waits).
        finished = FinishedJobRegistry(queue=Queue(bs.rq_queue, connection=r)).get_job_ids()
        assert sum(j.startswith(f"backfill-{bid}-") for j in finished) >= 2
        for proc in s.procs:
            assert "sig=" not in proc.output()
