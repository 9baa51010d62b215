"""A worker SIGKILLed mid-drain five times in one run while events keep arriving: exact counts."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import redis

from app.settings import Settings
from tests.reliability.harness import (
    FIGURES,
    WATCH,
    create_integration,
    create_key,
    deliver,
    diff,
    processed,
    stack,
)
from tests.support import (
    base_day,
    bearer,
    day_ms,
    expected_counts,
    pending,
    random_history,
    read_counts,
    wait_until,
)

pytestmark = pytest.mark.reliability

KILLS = 5
CHATS = 2500
DRAIN_BATCH = "20"  # small batches: a kill lands between or inside Lua calls, never at the end


def test_worker_sigkill_mid_drain_five_times(settings: Settings, r: redis.Redis) -> None:
    rng = random.Random(5)
    base = day_ms(base_day())
    began = time.monotonic()
    settings = settings.model_copy(update={"drain_batch": int(DRAIN_BATCH)})
    with stack(settings, {"DRAIN_BATCH": DRAIN_BATCH}) as s:
        web = s.web()
        iid = create_integration(web.url, "Killed", f"fc-killed-{uuid.uuid4().hex}")
        _, key = create_key(web.url, iid)
        histories = [
            random_history(rng, str(uuid.UUID(int=rng.getrandbits(128))), base)
            for _ in range(CHATS)
        ]
        events = [e for h in histories for e in h]
        events += rng.sample(events, len(events) // 5)  # some redeliveries too
        rng.shuffle(events)
        # Most events arrive in chunks while no worker runs (a backlog for each kill to hit);
        # a trickle keeps arriving all the time, so ingest and drains overlap.
        trickle, events = events[: len(events) // 6], events[len(events) // 6 :]
        chunks = [events[i :: KILLS + 1] for i in range(KILLS + 1)]
        client = httpx.Client(base_url=web.url, headers=bearer(key), timeout=15)
        stop = threading.Event()
        trickled: list[int] = []

        def trickle_run() -> None:
            with httpx.Client(base_url=web.url, headers=client.headers, timeout=15) as c:
                for at in range(0, len(trickle), 10):
                    if stop.is_set():
                        break
                    result = deliver(c, trickle[at : at + 10])
                    assert result.ok, result.statuses
                    trickled.append(result.accepted)
                    time.sleep(0.01)

        def post_chunk(chunk: list[dict[str, Any]]) -> int:
            total = 0
            for at in range(0, len(chunk), 200):
                result = deliver(client, chunk[at : at + 200])
                assert result.ok, result.statuses
                total += result.accepted
            return total

        feeder = threading.Thread(target=trickle_run, daemon=True)
        feeder.start()
        sent = 0
        kills: list[dict[str, int]] = []
        try:
            for round_ in range(KILLS * 3):  # a round that misses the drain is repeated
                if len(kills) == KILLS:
                    break
                if round_ < len(chunks):
                    sent += post_chunk(chunks[round_])
                else:  # a repeated round: a fresh backlog of redeliveries (counts unchanged)
                    sent += post_chunk(rng.sample(events, 1500))
                before = pending(r, settings)
                applied_before = processed(r, settings)[0]
                worker = s.worker()
                # Kill once the drain is under way: some of the backlog applied, most not.
                wait_until(
                    lambda b=applied_before: processed(r, settings)[0] > b,
                    30,
                    "the drain to start",
                    every=0.002,
                )
                time.sleep(rng.random() * 0.02)
                worker.kill()
                left = pending(r, settings)
                applied = processed(r, settings)[0] - applied_before
                if left > 0 and applied > 0:
                    kills.append({"backlog": before, "applied": applied, "left": left})
            assert len(kills) == KILLS, kills
            for chunk in chunks[round_:]:
                sent += post_chunk(chunk)
            feeder.join(timeout=120)
            assert not feeder.is_alive()
            sent += sum(trickled)
            assert sent >= len(events) + len(trickle)
            s.worker()
            wait_until(
                lambda: pending(r, settings) == 0 and processed(r, settings)[0] == sent,
                60,
                "the last worker to drain the rest",
            )
        finally:
            stop.set()
            client.close()
        expected = expected_counts(histories)
        actual = read_counts(web.url, iid)
        lost, double = diff(expected, actual)
        assert actual == expected, f"lost {lost}, double-counted {double}"
        assert processed(r, settings)[1] == 0
        assert not WATCH.scan(r)
    FIGURES.record(
        "worker_sigkill",
        events=sent,
        chats=CHATS,
        faults=len(kills),
        kills=kills,
        lost=lost,
        double=double,
        seconds=round(time.monotonic() - began, 1),
    )
    print(FIGURES.line())
