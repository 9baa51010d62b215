"""Shared fixtures: a real redis-server owned by the session, settings, app client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.redis_server import RedisServer
from tests.support import make_settings


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session (tests that break Redis start their own)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A sync client on an empty database."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server: RedisServer, r: redis.Redis) -> Settings:
    """Settings pointing at the session's Redis (emptied for each test)."""
    return make_settings(redis_server.url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app in-process, lifespan running."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client
