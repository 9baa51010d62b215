"""Group commit for the events endpoint: requests that arrive while a write is in flight
are stored together, one ingest-script call per shard, all calls in one pipeline.

An idle server adds no delay (the first request is sent at once); under load batches
grow by themselves. Each request stays atomic inside the script.

On a Redis Cluster (§14) each shard's call is sent on its own, concurrently: the keys of
one call share the shard's hash tag (one slot), a cluster pipeline cannot carry EVALSHA,
and the shards live on different nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import AskError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError

from app.lua import STORED_OK, Lua, LuaScript, StoreOutcome, load, store_outcome
from app.redis_client import STORAGE_ERRORS, AsyncDataCluster, as_cluster
from app.redis_keys import RedisKeys
from app.settings import Settings

MAX_EVENTS_PER_CALL = 5000  # bounds how long one script call holds Redis


class NotReplicated(RedisError):
    """Stored on the master, but fewer replicas than REDIS_REPLICA_ACKS confirmed it in time
    (the request is answered 503: a retry stores nothing twice)."""


OLDEST_KEPT = 4  # the ingest script's ARGV[5] (0-based in `head`): oldest delivery id kept


@dataclass
class Write:
    """One request's events for one integration."""

    shard: int
    integration_id: str
    key_hash: str
    events: list[bytes]
    note: str = "0:"  # for the deliveries log: "<ignored>:<one letter per event>"
    future: asyncio.Future[StoreOutcome] = field(init=False)


Call = list[list[Write]]  # one script call: the writes of one shard, grouped per API key


@dataclass
class GroupCommit:
    """Batches writes; `store` answers each write's outcome (stored, key not active, limited)."""

    redis: Redis
    settings: Settings
    on_schedule: Callable[[int], None]
    pending: list[Write] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.redis_keys = RedisKeys(self.settings.key_prefix)
        self.cluster = as_cluster(self.redis)
        s = self.settings
        self.head: list[Any] = [
            int(s.drain_lease_seconds * 1000),
            s.rate_limit_events_per_second,
            s.rate_limit_burst,
            s.deliveries_kept,
            "0",  # OLDEST_KEPT: set per flush
            s.deliveries_days * 86_400,
        ]

    async def store(self, write: Write) -> StoreOutcome:
        """Queue the write and wait for its outcome (RedisError if Redis failed)."""
        write.future = asyncio.get_running_loop().create_future()
        self.pending.append(write)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._flush())
        return await write.future

    def _calls(self, batch: list[Write]) -> list[Call]:
        """Writes grouped per shard (each call capped in events), then per API key."""
        by_shard: dict[int, list[list[Write]]] = defaultdict(lambda: [[]])
        sizes: dict[int, int] = defaultdict(int)
        for write in batch:
            groups = by_shard[write.shard]
            if groups[-1] and sizes[write.shard] + len(write.events) > MAX_EVENTS_PER_CALL:
                groups.append([])
                sizes[write.shard] = 0
            groups[-1].append(write)
            sizes[write.shard] += len(write.events)
        calls = []
        for groups in by_shard.values():
            for group in groups:
                per_key: dict[tuple[str, str], list[Write]] = {}
                for write in group:
                    per_key.setdefault((write.integration_id, write.key_hash), []).append(write)
                calls.append(list(per_key.values()))
        return calls

    def _keys_args(self, call: Call) -> tuple[list[str], list[Any]]:
        shard = call[0][0].shard
        rk = self.redis_keys
        keys = [rk.stream(shard), rk.drain_flag(shard), rk.pending(shard)]
        events: list[bytes] = []
        args: list[Any] = [*self.head, b""]
        for writes in call:
            first = writes[0]
            iid = first.integration_id
            keys += [
                rk.active_api_keys(shard, iid),
                rk.rate_bucket(shard, iid),
                rk.deliveries(shard, iid),
            ]
            args += [
                iid,
                first.key_hash,
                ",".join([str(len(w.events)) for w in writes]),
                ",".join([w.note for w in writes]),
            ]
            for w in writes:
                events += w.events
        if events:
            events.append(b"")
            args[len(self.head)] = b"\n".join(events)
        return keys, args

    async def _flush(self) -> None:
        script = load(Lua.INGEST)
        while self.pending:
            batch, self.pending = self.pending, []
            oldest_ms = int(time.time() * 1000) - self.settings.deliveries_days * 86_400_000
            self.head[OLDEST_KEPT] = f"{oldest_ms}-0"
            calls = self._calls(batch)
            if self.cluster is None:
                results = await self._store(self.redis, calls, script)
            else:
                results = await self._store_cluster(self.cluster, calls, script)
            for call, result in zip(calls, results, strict=True):
                self._settle(call, result)

    async def _store(self, redis: Redis, calls: list[Call], script: LuaScript) -> list[Any]:
        """One result per call, errors included (EVALSHA, then EVAL where it was missing)."""
        results = await self._send(redis, calls, script.sha, None)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            # Redis restarted or flushed its scripts: EVAL the source (caching it again).
            again = await self._send(redis, [calls[i] for i in missing], script.sha, script.source)
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _send(
        self, redis: Redis, calls: list[Call], sha: str, source: str | None
    ) -> list[Any]:
        """One result per call, errors included; one round trip (a pipeline if several)."""
        commands = []
        for call in calls:
            keys, args = self._keys_args(call)
            commands.append((len(keys), *keys, *args))
        script = sha if source is None else source
        acks = self.settings.redis_replica_acks
        try:
            if len(commands) == 1 and not acks:
                # Usually one shard is busy: a plain command skips the pipeline's machinery.
                run = redis.evalsha if source is None else redis.eval
                try:
                    return [await run(script, *commands[0])]
                except NoScriptError as exc:
                    return [exc]
            pipe = redis.pipeline(transaction=False)
            add = pipe.evalsha if source is None else pipe.eval
            for c in commands:
                add(script, *c)
            if acks:
                # WAIT covers the writes of its own connection: the pipeline's, so it goes last.
                pipe.execute_command("WAIT", acks, self.settings.redis_replica_wait_ms)
            results = list(await pipe.execute(raise_on_error=False))
        except RedisError as exc:
            return [exc] * len(calls)
        if acks:
            acked = results.pop()
            if isinstance(acked, BaseException) or int(acked) < acks:
                behind = NotReplicated(f"{acked} of {acks} replica(s) confirmed the write")
                results = [r if isinstance(r, BaseException) else behind for r in results]
        return results

    async def _store_cluster(
        self, cluster: AsyncDataCluster, calls: list[Call], script: LuaScript
    ) -> list[Any]:
        """Each call on its own, concurrently. Without replica acks through the cluster client
        (it follows MOVED and ASK and retries TRYAGAIN); with them as [EVALSHA..., WAIT] on a
        plain client of the master serving the calls' slot, as WAIT counts the writes of its
        own connection. A slot that moved or a master that went away fails its requests (503)
        and has the slot map read again for the next ones."""
        if not self.settings.redis_replica_acks:
            return list(await asyncio.gather(*(self._call_cluster(c, script) for c in calls)))
        per_node: dict[int, tuple[Redis, list[int]]] = {}
        try:
            for i, call in enumerate(calls):
                node = await cluster.node_client(self.redis_keys.stream(call[0][0].shard))
                per_node.setdefault(id(node), (node, []))[1].append(i)
        except STORAGE_ERRORS as exc:
            return [_as_redis_error(exc)] * len(calls)
        results: list[Any] = [None] * len(calls)

        async def run(node: Redis, indexes: list[int]) -> None:
            answers = await self._store(node, [calls[i] for i in indexes], script)
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer

        await asyncio.gather(*(run(node, indexes) for node, indexes in per_node.values()))
        if any(isinstance(r, AskError | RedisConnectionError) for r in results):  # MOVED too
            # (If that fails too, the cluster client reads the map on its next error anyway.)
            with contextlib.suppress(*STORAGE_ERRORS):
                await cluster.refresh_slots()
        return results

    async def _call_cluster(self, call: Call, script: LuaScript) -> Any:
        keys, args = self._keys_args(call)
        try:
            try:
                return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:  # a node that restarted, or a new master
                return await self.redis.eval(script.source, len(keys), *keys, *args)
        except STORAGE_ERRORS as exc:
            return _as_redis_error(exc)

    def _settle(self, call: Call, result: Any) -> None:
        writes = [w for group in call for w in group]  # the order the script answers in
        if isinstance(result, BaseException):
            for write in writes:
                if not write.future.done():
                    write.future.set_exception(result)
            return
        schedule, listed = result
        if listed:
            outcomes = [store_outcome(int(c)) for c in listed.split(b",")]
        else:
            outcomes = [STORED_OK] * len(writes)
        for write, outcome in zip(writes, outcomes, strict=True):
            if not write.future.done():
                write.future.set_result(outcome)
        if schedule:
            self.on_schedule(writes[0].shard)


def _as_redis_error(exc: Exception) -> RedisError:
    """A storage failure as a RedisError (the cluster client raises a few that are not)."""
    if isinstance(exc, RedisError):
        return exc
    return RedisError(f"{type(exc).__name__}: {exc}")
