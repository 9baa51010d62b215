"""Retry a worker's Redis call through a failover or a slot migration (§14).

A cluster answers TRYAGAIN while a slot moves and CLUSTERDOWN while a master is replaced;
connections drop when a node dies. Every worker write is idempotent (batches, splits,
sweeps), so the call is simply made again, with backoff, for up to about half a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    ConnectionError,
    RedisClusterException,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

log = logging.getLogger("injixo.retry")

T = TypeVar("T")

# (RedisClusterException: a slot not covered while a replica takes over, among others.)
TRANSIENT = (
    ClusterDownError,
    ClusterError,
    ConnectionError,
    TimeoutError,
    TryAgainError,
    RedisClusterException,
)
DEADLINE_SECONDS = 30.0


def transient(exc: BaseException) -> bool:
    """A failure that goes away by itself: retry."""
    if isinstance(exc, TRANSIENT):
        return True
    # Some cluster states reach the client as plain error replies.
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in {
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "LOADING",
        "READONLY",
    }


def retrying(call: Callable[[], T], deadline: float = DEADLINE_SECONDS) -> T:
    """`call()`, again after a transient failure, until `deadline` seconds have passed."""
    began = time.monotonic()
    delay = 0.05
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or time.monotonic() - began + delay > deadline:
                raise
            log.warning("redis busy (%s); retrying in %.2f s", str(exc)[:80], delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
