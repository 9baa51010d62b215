"""Every Redis client the product builds, in one place (§14): the data tier's (one Redis, or a
Redis Cluster when REDIS_CLUSTER is set; sync and asyncio) and RQ's (RQ_REDIS_URL: a plain
Redis, or the master a Sentinel names).

The code base is annotated with `redis.Redis` / `redis.asyncio.Redis`; redis-py's cluster
clients implement the same command API without being subclasses, so the factories return
them cast to those types. What a cluster needs beyond that is here too: a plain client of
the master that serves a slot, for commands that must share one connection (a MULTI/EXEC,
a WAIT after a write), and the errors that mean "the cluster cannot serve this right now".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import Sentinel

from app.settings import SentinelURL, Settings

#: What a Redis (or a cluster) raises when it cannot serve a command right now: the web tier
#: answers 503 + Retry-After, workers retry. redis-py's cluster client raises a few errors
#: that are not RedisErrors (SlotNotCoveredError during a failover, among others).
STORAGE_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)


#: reinitialize_steps=0: a MOVED updates that slot only. redis-py's default re-reads the whole
#: map every 5th MOVED, the asyncio client by closing every connection, in-flight commands'
#: too, and sends those again: after a resharding, concurrent script calls ran twice here
#: (8 or 16 concurrent INCR scripts after moving their slots: 6 of 6 rounds had duplicates).
CLUSTER_OPTIONS: dict[str, Any] = {"reinitialize_steps": 0}


class AsyncDataCluster(AsyncRedisCluster):
    """redis-py's asyncio cluster client, plus plain clients of its masters for what must run
    on one connection to the node serving a slot. (Its own transactions start a thread and
    an event loop per queued command in redis-py 8.1: 136 ms for a 400-command MULTI.)"""

    node_url: str
    node_options: dict[str, Any]
    node_clients: dict[tuple[str, int], AsyncRedis]

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """As redis-py's, once the slot map is known. (redis-py 8.1 routes a command issued
        before its first discovery as keyless, to a random master: concurrent first commands
        then meet MOVED, and the fifth MOVED closes every connection, in-flight ones too,
        so commands that already ran are sent again.)"""
        if self.get_default_node() is None:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)

    async def node_client(self, key: str) -> AsyncRedis:
        """A plain client of the master serving `key`'s slot (as this client last learnt)."""
        await self.initialize()
        node = self.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        address = (node.host, int(node.port))
        client = self.node_clients.get(address)
        if client is None:
            parts = urlsplit(self.node_url)
            userinfo = parts.netloc.rpartition("@")[0]
            netloc = f"{userinfo}@" if userinfo else ""
            url = urlunsplit(parts._replace(netloc=f"{netloc}{node.host}:{node.port}"))
            client = AsyncRedis.from_url(url, **self.node_options)
            self.node_clients[address] = client
        return client

    async def refresh_slots(self) -> None:
        """Read the slot map again (after a MOVED, or a node that stopped answering)."""
        await self.nodes_manager.initialize()

    async def aclose(self) -> None:
        """Close the node clients too (redis-py also calls this to reset after errors)."""
        clients, self.node_clients = list(self.node_clients.values()), {}
        for client in clients:
            await client.aclose()
        await super().aclose()


def _async_cluster(settings: Settings, options: dict[str, Any]) -> AsyncDataCluster:
    cluster_options = {**CLUSTER_OPTIONS, **options}
    client = cast(
        AsyncDataCluster, AsyncDataCluster.from_url(settings.redis_url, **cluster_options)
    )
    client.node_url, client.node_options, client.node_clients = settings.redis_url, options, {}
    return client


def data_client(settings: Settings, **options: Any) -> Redis:
    """The synchronous data-tier client (REDIS_URL; a cluster client with REDIS_CLUSTER)."""
    if settings.redis_cluster:
        # RedisCluster has Redis's command API but not its class: typed as Redis throughout.
        # (reinitialize_steps=0: see _async_cluster; threads share this client.)
        cluster = RedisCluster.from_url(settings.redis_url, **{**CLUSTER_OPTIONS, **options})
        return cast(Redis, cluster)
    return Redis.from_url(settings.redis_url, **options)


def async_data_client(settings: Settings, **options: Any) -> AsyncRedis:
    """The asyncio data-tier client (REDIS_URL; a cluster client with REDIS_CLUSTER)."""
    if settings.redis_cluster:
        # The asyncio RedisCluster has Redis's command API but not its class: typed as Redis.
        return cast(AsyncRedis, _async_cluster(settings, options))
    return AsyncRedis.from_url(settings.redis_url, **options)


class _SentinelMaster(Redis):
    """RQ's Redis found through Sentinel; closing it closes the sentinel connections too."""

    def close(self) -> None:
        """Close the master's connections and the sentinels'."""
        super().close()
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            sentinel.close()


class _AsyncSentinelMaster(AsyncRedis):
    """`_SentinelMaster` for asyncio."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master's connections and the sentinels'."""
        await super().aclose(close_connection_pool)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()


def _sentinel_options(sentinel: SentinelURL, options: dict[str, Any]) -> dict[str, Any]:
    """The master's connection options: the caller's, with the URL's database and password."""
    out = {**options, "db": sentinel.db}
    if sentinel.password is not None:
        out["password"] = sentinel.password
    return out


def _sentinels_own(options: dict[str, Any]) -> dict[str, Any]:
    """Timeouts for talking to the sentinels themselves (no password: see SentinelURL)."""
    return {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}


def rq_client(settings: Settings, **options: Any) -> Redis:
    """RQ's synchronous client: RQ_REDIS_URL (else REDIS_URL), or the master Sentinel names."""
    sentinel = settings.rq_sentinel
    if sentinel is not None:
        own, kwargs = _sentinels_own(options), _sentinel_options(sentinel, options)
        found = Sentinel(list(sentinel.sentinels), sentinel_kwargs=own)  # type: ignore[no-untyped-call]
        master: Redis = found.master_for(sentinel.master, _SentinelMaster, **kwargs)  # type: ignore[no-untyped-call]
        return master
    return Redis.from_url(settings.rq_url, **options)


def async_rq_client(settings: Settings, **options: Any) -> AsyncRedis:
    """RQ's asyncio client (readiness, worker heartbeats), found as `rq_client` finds it."""
    sentinel = settings.rq_sentinel
    if sentinel is not None:
        own, kwargs = _sentinels_own(options), _sentinel_options(sentinel, options)
        found = AsyncSentinel(list(sentinel.sentinels), sentinel_kwargs=own)  # type: ignore[no-untyped-call]
        master: AsyncRedis = found.master_for(sentinel.master, _AsyncSentinelMaster, **kwargs)
        return master
    return AsyncRedis.from_url(settings.rq_url, **options)


def as_cluster(redis: AsyncRedis) -> AsyncDataCluster | None:
    """The cluster client behind an asyncio data client, None for one Redis."""
    client: object = redis
    return client if isinstance(client, AsyncDataCluster) else None


async def shard_transaction(
    redis: AsyncRedis, key: str, fill: Callable[[AsyncPipeline], None]
) -> list[Any]:
    """`fill`'s commands in one MULTI/EXEC; on a cluster every key must share `key`'s slot
    and they go to the master serving it. A slot that moved (MOVED) or a master that went
    away has the slot map read again and the transaction sent once more; what still fails
    raises (the web tier answers 503)."""
    cluster = as_cluster(redis)
    if cluster is None:
        async with redis.pipeline(transaction=True) as pipe:
            fill(pipe)
            return list(await pipe.execute())
    for attempt in range(2):
        node = await cluster.node_client(key)
        try:
            async with node.pipeline(transaction=True) as pipe:
                fill(pipe)
                return list(await pipe.execute())
        except (AskError, RedisConnectionError):  # MOVED is an AskError
            await cluster.refresh_slots()
            if attempt:
                raise
    raise AssertionError("unreachable")
