"""Every key a script touches is one it declared in KEYS (§14), watched with MONITOR.

On a Redis Cluster an undeclared key fails only when it lives on another node, so the
cluster tests alone cannot prove this: here every command a script runs (MONITOR shows
them after the EVALSHA that ran them) is checked against that call's KEYS, over a workload
that takes every path of every script.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from app.compact import Compact, Kind, chat_key
from app.lua import Lua, load
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from tests.redis_server import RedisServer
from tests.support import (
    apply_all,
    at,
    conv_event,
    create_integration,
    post_events,
    shard_of,
    store,
    worked_example,
)
from workers.drain import Drainer

QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def unescape(raw: bytes) -> bytes:
    """A MONITOR argument (C-escaped by Redis) as the bytes sent."""
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\":
            nxt = raw[i + 1 : i + 2]
            if nxt == b"x":
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            out += ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out.append(raw[i])
        i += 1
    return bytes(out)


class Monitor:
    """Every command the server runs, as (from a script?, args), read on its own socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.buffer = b""
        self.lines: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            self.buffer += chunk
            *done, self.buffer = self.buffer.split(b"\r\n")
            self.lines += done

    def stop(self) -> list[tuple[bool, list[bytes]]]:
        time.sleep(0.3)
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        out = []
        for line in self.lines:
            if not line.startswith(b"+") or b"] " not in line:
                continue
            source, _, rest = line.partition(b"] ")
            out.append((source.endswith(b" lua"), [unescape(a) for a in QUOTED.findall(rest)]))
        return out


@pytest.fixture
def monitor(redis_server: RedisServer, r: redis.Redis) -> Iterator[Monitor]:
    watcher = Monitor(redis_server.port)
    time.sleep(0.1)
    yield watcher
    if not watcher.stopped.is_set():
        watcher.stop()


def keys_of(r: redis.Redis, args: list[bytes]) -> list[bytes]:
    try:
        return [k if isinstance(k, bytes) else k.encode() for k in r.command_getkeys(*args)]
    except redis.ResponseError:  # a command without keys (TIME)
        return []


def workload(r: redis.Redis, settings: Settings, client: TestClient) -> None:
    """Every path of every script: ingest, drain (with its end), worked example, parking
    and names learnt later, the webhook path's kinds, Freshchat's lookup, dead letters,
    splits, moves between days, the sweep, and state kept the old way moved in."""
    iid, api_key = create_integration(client)
    assert post_events(client, api_key, worked_example()).status_code == 202
    shard = shard_of(r, settings, iid)
    keys = RedisKeys(settings.key_prefix)
    drainer = Drainer.build(settings, r)
    try:
        r.set(keys.legacy_chat(shard, iid, "old"), "123451", px=86_400_000)
        r.set(keys.legacy_assignment(shard, iid, "old"), "7:g1", px=86_400_000)
        drainer.drain(shard)
        t = at("2026-11-23T08:05")
        store(r, settings, iid, shard, [
            conv_event("late", "resolved", at("2026-11-24T00:05"), ("g1", "Support")),
            conv_event("q", "resolved", t, None, group_id_only="g7"),  # waits for a name
        ])  # fmt: skip
        apply_all(r, settings, shard)
        r.hset(keys.groups(shard, iid), "g7", "Sales")
        store(r, settings, iid, shard, [
            conv_event("late", "resolved", at("2026-11-23T23:55"), ("g1", "Support")),
        ])  # fmt: skip
        apply_all(r, settings, shard)  # moves a chat to an undeclared day, applies parked
        events = [Compact(chat_key(str(uuid.UUID(int=i + 1))), Kind.SOLVED, t, "g1", "S")
                  for i in range(300)]  # fmt: skip
        events += [
            Compact("w1", Kind.ASSIGNED, t - 9, "g2", "Sales"),
            Compact("w1", Kind.SOLVED_GROUP_UNNAMED, t, "", ""),
            Compact("w2", Kind.SOLVED_GROUP_UNNAMED, t, "", ""),  # waits for the lookup
        ]
        for e in events:
            r.xadd(keys.stream(shard), {"e": e.encode(iid)})
        r.xadd(keys.stream(shard), {"e": b"not json"})
        result = drainer.applier.apply(shard, count=100)
        while result.last_id:
            result = drainer.applier.apply(shard, "(" + result.last_id, count=100)
        drainer.buckets.remember_lookup(shard, iid, "w2", "g2")
        apply_all(r, settings, shard)
        [(dead_id, _)] = r.xrange(keys.dead(shard)) or []
        drainer.applier.apply(shard, text(dead_id), count=1, dead_letter=True, end="+")
        drainer.buckets.sweep(shard, time.time() + 400 * 86_400)
    finally:
        drainer.close()


def test_scripts_touch_only_the_keys_they_declare(
    r: redis.Redis, settings: Settings, client: TestClient, monitor: Monitor
) -> None:
    workload(r, settings, client)
    seen = monitor.stop()
    names = {load(s).sha.encode(): s for s in Lua} | {load(s).source.encode(): s for s in Lua}
    calls: Counter[Lua] = Counter()
    modes: Counter[bytes] = Counter()
    declared: set[bytes] | None = None
    checked, undeclared = 0, []
    for from_script, args in seen:
        if not args:
            continue
        if not from_script:
            declared = None
            if args[0].upper() in (b"EVALSHA", b"EVAL") and args[1] in names:
                script = names[args[1]]
                calls[script] += 1
                numkeys = int(args[2])
                declared = set(args[3 : 3 + numkeys])
                if script is Lua.APPLY:
                    modes[args[3 + numkeys]] += 1
            continue
        assert declared is not None, f"a script command without its call: {args!r}"
        for key in keys_of(r, args):
            checked += 1
            if key not in declared:
                undeclared.append((args[0], key))
    assert undeclared == []
    # The workload took every script and every mode of the apply script (the unlock script
    # touches its KEYS[1] only).
    assert set(calls) == set(Lua) - {Lua.UNLOCK} and checked > 600
    assert set(modes) == {b"apply", b"split", b"sweep", b"lookup", b"migrate"}
