"""Child process: time `Drainer.drain(shard)` until the shards' streams are empty.

Prints `{"applied": n, "seconds": s, "left": pending}` as JSON on stdout.
"""

from __future__ import annotations

import sys
import time

import orjson

from app.redis_client import data_client
from app.redis_keys import RedisKeys
from app.settings import load_settings
from workers.drain import Drainer


def main(shards: list[int]) -> None:
    """Drain the shards in this process, one after the other, until all are empty; report."""
    settings = load_settings()
    redis = data_client(settings, socket_timeout=30, socket_connect_timeout=5)
    drainer = Drainer.build(settings, redis)
    streams = [RedisKeys(settings.key_prefix).stream(shard) for shard in shards]
    redis.ping()
    applied = 0
    began = time.perf_counter()
    while True:
        busy = [shard for shard, stream in zip(shards, streams, strict=True) if redis.xlen(stream)]
        if not busy:
            break
        for shard in busy:
            applied += int(drainer.drain(shard)["applied"])
    seconds = time.perf_counter() - began
    left = sum(int(redis.xlen(stream)) for stream in streams)
    sys.stdout.write(orjson.dumps({"applied": applied, "seconds": seconds, "left": left}).decode())


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
