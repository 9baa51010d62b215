"""REDIS_CLUSTER and RQ_REDIS_URL's Sentinel form (§14): refused at start with a message that
names the setting and says what to do; the clients built for what is accepted."""

from __future__ import annotations

import asyncio
import os

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import SentinelConnectionPool

from app.errors import ConfigError
from app.redis_client import AsyncDataCluster, async_data_client, async_rq_client, rq_client
from app.settings import SentinelURL, load_settings, parse_sentinel_url
from tests.support import ADMIN_TOKEN, ENCRYPTION_KEY, make_settings

NODE = "redis://10.0.0.5:7000/0"
RQ = "redis://10.0.0.9:6379/0"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> pytest.MonkeyPatch:
    """A clean environment with the required settings (no .env file)."""
    monkeypatch.chdir(tmp_path)
    for name in ("REDIS_URL", "RQ_REDIS_URL", "REDIS_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("ENCRYPTION_KEY", ENCRYPTION_KEY)
    return monkeypatch


def refusal(env: pytest.MonkeyPatch, **values: str) -> str:
    """The message load_settings refuses these settings with."""
    for name, value in values.items():
        env.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    return str(refused.value)


def test_a_cluster_without_rqs_own_redis_is_refused(env: pytest.MonkeyPatch) -> None:
    message = refusal(env, REDIS_CLUSTER="true", REDIS_URL=NODE)
    assert "RQ_REDIS_URL: " in message and "must be set with REDIS_CLUSTER=true" in message
    assert "RQ cannot run on a Redis Cluster" in message


@pytest.mark.parametrize(
    "rq_url",
    [NODE, "redis://10.0.0.5:7000", "redis://10.0.0.5:7000/1", "rediss://10.0.0.5:7000/0"],
)
def test_rq_on_the_cluster_itself_is_refused(env: pytest.MonkeyPatch, rq_url: str) -> None:
    message = refusal(env, REDIS_CLUSTER="true", REDIS_URL=NODE, RQ_REDIS_URL=rq_url)
    assert "RQ_REDIS_URL: " in message and "must not be REDIS_URL's server" in message


def test_localhost_and_loopback_are_one_server(env: pytest.MonkeyPatch) -> None:
    message = refusal(
        env,
        REDIS_CLUSTER="true",
        REDIS_URL="redis://127.0.0.1:7000/0",
        RQ_REDIS_URL="redis://localhost:7000/0",
    )
    assert "must not be REDIS_URL's server" in message


def test_a_cluster_over_a_unix_socket_is_refused(env: pytest.MonkeyPatch) -> None:
    message = refusal(
        env, REDIS_CLUSTER="true", REDIS_URL="unix:///run/redis.sock", RQ_REDIS_URL=RQ
    )
    assert "REDIS_CLUSTER: " in message and "not a unix:// socket" in message
    assert "RQ_REDIS_URL" not in message


@pytest.mark.parametrize("url", ["redis://10.0.0.5:7000/3", "redis://10.0.0.5:7000/?db=2"])
def test_a_cluster_database_other_than_0_is_refused(env: pytest.MonkeyPatch, url: str) -> None:
    message = refusal(env, REDIS_CLUSTER="true", REDIS_URL=url, RQ_REDIS_URL=RQ)
    assert "REDIS_CLUSTER: " in message and "a Redis Cluster has only database 0" in message


def test_a_cluster_with_rq_apart_is_accepted(env: pytest.MonkeyPatch) -> None:
    env.setenv("REDIS_CLUSTER", "true")
    env.setenv("REDIS_URL", NODE)
    env.setenv("RQ_REDIS_URL", RQ)
    settings = load_settings()
    assert settings.redis_cluster and settings.redis_url == NODE and settings.rq_url == RQ
    env.setenv("RQ_REDIS_URL", "redis+sentinel://s1:26379,s2:26380/rq-master/2")
    assert load_settings().rq_sentinel == SentinelURL(
        (("s1", 26379), ("s2", 26380)), "rq-master", 2, None
    )


def test_without_cluster_nothing_changes(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert not settings.redis_cluster and settings.rq_url == settings.redis_url
    env.setenv("REDIS_URL", "redis://10.0.0.5:6379/4")
    env.setenv("RQ_REDIS_URL", "redis://10.0.0.5:6379/4")  # allowed: one plain Redis
    assert load_settings().rq_url == "redis://10.0.0.5:6379/4"


def test_sentinel_urls_are_parsed() -> None:
    assert parse_sentinel_url("redis+sentinel://:p%40ss@h1,h2:26380/mymaster") == SentinelURL(
        (("h1", 26379), ("h2", 26380)), "mymaster", 0, "p@ss"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379,h2:26379", "names no master"),
        ("redis+sentinel://h1:26379/", "names no master"),
        ("redis+sentinel://h1:port/mymaster", "bad sentinel address 'h1:port'"),
        ("redis+sentinel://h1,,h2/mymaster", "bad sentinel address ''"),
        ("redis+sentinel://h1:70000/mymaster", "bad sentinel address"),
        ("redis+sentinel://h1/mymaster/zero", "must end in /<master-name> or /<master-name>/<db>"),
        ("redis+sentinel://h1/mymaster/0/x", "must end in /<master-name>"),
        ("redis+sentinel://h1/mymaster?db=1", "takes no query string"),
    ],
)
def test_a_bad_sentinel_url_is_refused_by_name(
    env: pytest.MonkeyPatch, url: str, says: str
) -> None:
    message = refusal(env, RQ_REDIS_URL=url)
    assert "RQ_REDIS_URL: " in message and says in message, message
    assert "redis+sentinel://[:password@]host[:port]" in message  # the form to use


def test_the_data_redis_cannot_be_a_sentinel_url(env: pytest.MonkeyPatch) -> None:
    message = refusal(env, REDIS_URL="redis+sentinel://h1:26379/mymaster/0")
    assert "REDIS_URL: " in message and "redis://" in message


def test_rqs_client_behind_sentinel_asks_for_the_named_master() -> None:
    settings = make_settings(RQ, rq_redis_url="redis+sentinel://:pw@s1,s2:26380/rq-master/2")
    client = rq_client(settings, socket_timeout=5)  # nothing connects until a command
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "rq-master"
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "pw"
    hosts = [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in pool.sentinel_manager.sentinels
    ]
    assert hosts == [("s1", 26379), ("s2", 26380)]
    client.close()

    async def check() -> None:
        aclient = async_rq_client(settings, socket_timeout=5)
        assert isinstance(aclient.connection_pool, AsyncSentinelPool)
        assert aclient.connection_pool.service_name == "rq-master"
        await aclient.aclose()

    asyncio.run(check())


def test_the_asyncio_data_client_is_a_cluster_client_with_redis_cluster() -> None:
    async def check() -> None:
        settings = make_settings(NODE, redis_cluster=True, rq_redis_url=RQ)
        client = async_data_client(settings)  # discovers the nodes on its first command
        assert isinstance(client, AsyncDataCluster)
        await client.aclose()
        plain = async_data_client(make_settings(NODE))
        assert not isinstance(plain, AsyncDataCluster)
        await plain.aclose()

    asyncio.run(check())
