"""Fixtures of the group-name tests: settings allowing the stand-in, the stand-in listing
GROUPS, a hand-moved clock and a resolver on it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from app.settings import Settings
from tests.freshchat_standin import FreshchatStandIn, running
from tests.group_support import GOOD, GROUPS, Clock
from tests.redis_server import RedisServer
from tests.support import make_settings
from workers.groups import GroupResolver


@pytest.fixture
def settings(redis_server: RedisServer, r: redis.Redis) -> Settings:
    return make_settings(redis_server.url, freshchat_allow_insecure=True)


@pytest.fixture
def fc() -> Iterator[FreshchatStandIn]:
    with running() as standin:
        standin.script.valid_keys = {GOOD}
        standin.script.groups = dict(GROUPS)
        yield standin


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(r: redis.Redis, settings: Settings, clock: Clock) -> Iterator[GroupResolver]:
    client = httpx.Client(timeout=httpx.Timeout(1.0), follow_redirects=False)
    yield GroupResolver(r, settings, client=client, clock=clock)
    client.close()
