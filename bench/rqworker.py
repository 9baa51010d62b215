"""Child process: run an RQ worker in burst mode over the naive queue and time it.

Usage: python -m bench.rqworker simple|fork   (BENCH_REDIS_URL names the Redis)
Prints `{"seconds": s, "finished": n, "failed": m}` as JSON on stdout.
"""

from __future__ import annotations

import os
import sys
import time

import orjson
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from bench.baselines import NAIVE_QUEUE


def main(kind: str) -> None:
    """Work the naive queue until it is empty."""
    redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
    queue = Queue(NAIVE_QUEUE, connection=redis)
    cls = SimpleWorker if kind == "simple" else Worker
    worker = cls([queue], connection=redis)
    began = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    seconds = time.perf_counter() - began
    finished = FinishedJobRegistry(queue=queue).count
    failed = FailedJobRegistry(queue=queue).count
    result = {"seconds": seconds, "finished": finished, "failed": failed}
    sys.stdout.write(orjson.dumps(result).decode())


if __name__ == "__main__":
    main(sys.argv[1])
