"""Hostile bodies at Freshchat's webhook endpoint (§11, §12), each sent with a valid signature
and with a garbage one: only 202/4xx come back, a garbage signature is always the one 401,
and exactly what the 202s accepted is stored."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.main import create_app
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.support import (
    WEBHOOK_FIXTURES,
    create_integration,
    post_webhook,
    set_up_webhook,
    shard_of,
    sign,
)

pytestmark = [pytest.mark.reliability]

FIXTURE_BODIES = [
    (WEBHOOK_FIXTURES / name).read_bytes()
    for name in json.loads((WEBHOOK_FIXTURES / "signatures.json").read_text())
]
ALLOWED = {202, 400, 401, 413, 415}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)
ACTIONS = ["conversation_resolution", "conversation_assignment", "conversation_reopen", "x"]


def _dumps(value: Any) -> bytes:
    """JSON of anything generated (big integers and Infinity included, as hostile input)."""
    return json.dumps(value).encode()


def _mutated(body: bytes, rng: random.Random) -> bytes:
    """A fixture body with a few bytes flipped, cut short, or a field replaced."""
    data = bytearray(body)
    how = rng.randrange(3)
    if how == 0:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if how == 1:
        return bytes(data[: rng.randrange(len(data))])
    doc = json.loads(body)
    doc[rng.choice(["action", "action_time", "data", "actor"])] = rng.choice(
        [None, 1e308, -1, "", "x" * 300, [], {}, {"resolve": None}, "2026-13-45T99:99:99Z"]
    )
    return _dumps(doc)


def _shaped(action: str, time: Any, conversation: Any, group: Any) -> bytes:
    """A body of the documented shape with hostile values in its fields."""
    conv = {"conversation_id": conversation, "assigned_group_id": group}
    data = {
        "resolve": {"conversation": conv},
        "assignment": {"to_group_id": group, "conversation": conv},
        "reopen": {"conversation": conv},
    }
    return _dumps({"action": action, "action_time": time, "data": data})


@pytest.fixture
def web(settings: Settings) -> Iterator[TestClient]:
    """The app in-process; a server error comes back as a 500 rather than raising."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


FIXED_HOSTILE = [
    b"",
    b"null",
    b"[]",
    b"[" * 10_000 + b"]" * 10_000,
    b'{"action":"conversation_resolution","action_time":1e400,"data":{}}',
    b'{"action":"conversation_resolution","action_time":NaN}',
    b'{"action":"\xff\xfe","action_time":"2026-11-23T08:00:00Z"}',
    b'{"action":"conversation_resolution\x00","action_time":0}',
    b'{"action":"conversation_resolution","action_time":"2026-11-23T08:00:00Z","data":{"resolve":{"conversation":{"conversation_id":"'
    + b"9" * 400
    + b'"}}}}',
    b'{"action":"conversation_resolution","action_time":"2026-11-23T08:00:00Z","data":{"resolve":{"conversation":{"conversation_id":99999999999999999999999}}}}',
    b'\xef\xbb\xbf{"action":"message_create"}',
    b'{"action":"message_create"}' * 1000,
]


@hsettings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    generated=st.lists(
        st.one_of(
            json_values.map(_dumps),
            st.binary(max_size=300),
            st.builds(
                _shaped,
                st.sampled_from(ACTIONS),
                json_values,
                json_values,
                json_values,
            ),
            st.builds(
                _shaped,
                st.sampled_from(ACTIONS),
                st.sampled_from(["2026-11-23T08:00:00Z", 1795420800, "yesterday", None]),
                st.text(max_size=300) | st.integers(),
                st.text(max_size=300) | st.none(),
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    seed=st.integers(0, 2**32),
)
def test_hostile_bodies_get_only_4xx_or_202(
    web: TestClient, r: redis.Redis, settings: Settings, generated: list[bytes], seed: int
) -> None:
    rng = random.Random(seed)
    r.flushall()
    iid, _ = create_integration(web)
    path = set_up_webhook(web, iid)
    bodies = generated + [_mutated(rng.choice(FIXTURE_BODIES), rng) for _ in range(4)]
    if seed % 10 == 0:
        bodies += FIXED_HOSTILE
    statuses: Counter[int] = Counter()
    accepted = 0
    for body in bodies:
        garbage = rng.choice(["", "AAAA", sign(body + b" "), "%%%", "A" * 5000])
        refused = post_webhook(web, path, body, garbage or None)
        assert refused.status_code == 401, (body[:200], refused.text)
        answer = post_webhook(web, path, body)
        statuses[answer.status_code] += 1
        assert answer.status_code in ALLOWED, (body[:200], answer.status_code, answer.text)
        if answer.status_code == 202:
            accepted += int(answer.json()["accepted"])
    stream = RedisKeys(settings.key_prefix).stream(shard_of(r, settings, iid))
    assert r.xlen(stream) == accepted
