"""Shared fixtures: a real redis-server owned by the session, settings, app client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.factories import ADMIN_TOKEN, make_settings
from tests.redis_server import RedisServer


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


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def create_integration(client: TestClient, name: str = "Acme", **extra: Any) -> tuple[str, str]:
    """Create an integration (no Freshchat check) and a key; returns (id, api key)."""
    body = {
        "name": name,
        "freshchat_domain": "acme.freshchat.com",
        "freshchat_api_key": "fc-secret-KEY-123",
        "verify": False,
        **extra,
    }
    response = client.post("/v1/integrations", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    iid = response.json()["id"]
    key = client.post(f"/v1/integrations/{iid}/api-keys", headers=ADMIN)
    assert key.status_code == 201, key.text
    return iid, key.json()["api_key"]
