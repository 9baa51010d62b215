"""Every event delivered three times, in random order, by concurrent clients -> exact counts."""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests import support
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
    apply_all,
    base_day,
    counts,
    day_ms,
    expected_counts,
    pending,
    post_events,
    random_history,
    read_counts,
    shard_of,
    wait_until,
)

pytestmark = pytest.mark.reliability

CHATS = 700  # per integration; ~2,000 distinct events each, ~6,000 deliveries each
CLIENTS = 6


def test_every_event_three_times_in_random_order(settings: Settings, r: redis.Redis) -> None:
    rng = random.Random(20261123)
    base = day_ms(base_day())
    began = time.monotonic()
    with stack(settings) as s:
        webs = [s.web(), s.web()]
        s.worker()
        s.worker()
        plan: list[tuple[str, list[dict[str, Any]]]] = []
        histories: dict[str, list[list[dict[str, Any]]]] = {}
        iids: dict[str, str] = {}
        for name in ("Alpha", "Beta"):
            iid = create_integration(webs[0].url, name, f"fc-{name}-{uuid.uuid4().hex}")
            _, key = create_key(webs[0].url, iid)
            iids[name] = iid
            histories[name] = [
                random_history(rng, str(uuid.UUID(int=rng.getrandbits(128))), base)
                for _ in range(CHATS)
            ]
            deliveries = [e for h in histories[name] for e in h] * 3
            rng.shuffle(deliveries)
            at = 0
            while at < len(deliveries):
                size = rng.choice([1, 1, 2, 5, 20, 40])
                plan.append((key, deliveries[at : at + size]))
                at += size
        rng.shuffle(plan)
        sent = sum(len(b) for _, b in plan)

        def client_run(index: int) -> int:
            mine = plan[index::CLIENTS]
            accepted = 0
            clients = {
                w.url: httpx.Client(base_url=w.url, timeout=15) for w in webs
            }  # one connection pool per web process
            try:
                for key, batch in mine:
                    client = clients[webs[rng.randrange(2)].url]
                    client.headers["Authorization"] = f"Bearer {key}"
                    result = deliver(client, batch)
                    assert result.statuses[-1] == 202, result.statuses
                    accepted += result.accepted
            finally:
                for c in clients.values():
                    c.close()
            return accepted

        with ThreadPoolExecutor(CLIENTS) as pool:
            accepted = sum(pool.map(client_run, range(CLIENTS)))
        assert accepted == sent
        wait_until(
            lambda: pending(r, settings) == 0 and processed(r, settings)[0] == sent,
            90,
            "the workers to apply every delivery",
        )
        assert processed(r, settings) == (sent, 0)
        lost = double = 0
        for name, iid in iids.items():
            expected = expected_counts(histories[name])
            actual = read_counts(webs[1].url, iid)
            one_lost, one_double = diff(expected, actual)
            lost, double = lost + one_lost, double + one_double
            assert actual == expected, f"{name}: lost {one_lost}, double-counted {one_double}"
        assert not WATCH.scan(r)
    FIGURES.record(
        "redelivery_3x",
        events=sent,
        distinct_events=sent // 3,
        chats=2 * CHATS,
        requests=len(plan),
        lost=lost,
        double=double,
        seconds=round(time.monotonic() - began, 1),
    )
    print(FIGURES.line())


@hsettings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chats=st.integers(1, 25),
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    drain=st.integers(1, 50),
)
def test_property_three_deliveries_any_order_any_batching(
    settings: Settings, r: redis.Redis, chats: int, seed: int, sizes: list[int], drain: int
) -> None:
    """Property: for any histories, any interleaving of three deliveries of every event, any
    request batching and any drain batch size, the counts equal the oracle's."""
    rng = random.Random(seed)
    r.flushall()
    histories = [
        random_history(rng, str(uuid.UUID(int=rng.getrandbits(128))), day_ms(base_day()))
        for _ in range(chats)
    ]
    deliveries = [e for h in histories for e in h] * 3
    rng.shuffle(deliveries)
    with TestClient(create_app(settings)) as client:
        iid, key = support.create_integration(client)
        at = 0
        while at < len(deliveries):
            size = sizes[at % len(sizes)]
            answer = post_events(client, key, deliveries[at : at + size])
            assert answer.status_code == 202, answer.text
            at += size
            if rng.random() < 0.3:  # drains interleave with ingest
                for shard in range(settings.shards):
                    apply_all(r, settings, shard, batch=drain)
        for shard in range(settings.shards):
            apply_all(r, settings, shard, batch=drain)
        assert pending(r, settings) == 0
        shard = shard_of(r, settings, iid)
        assert counts(r, settings, iid, shard) == expected_counts(histories)
