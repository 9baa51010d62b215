"""The worker process outlives Redis going away at any moment: only a stop request ends it."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

import workers.runner as runner
from app.settings import Settings
from tests.e2e.processes import Process
from tests.redis_server import RedisServer
from tests.support import make_settings, wait_until


class ScriptedWorker:
    """Stands in for RQ's SimpleWorker: each instance plays the next step of a script."""

    steps: ClassVar[list[str]] = []
    built = 0

    def __init__(self, *_: Any, **__: Any) -> None:
        type(self).built += 1
        self.step = type(self).steps.pop(0)
        if self.step == "setup-fails":  # RQ's constructor sends CLIENT SETNAME
            raise RedisConnectionError("Connection refused")
        self._shutdown_requested_date: datetime | None = None
        self._stop_requested = False

    def work(self, burst: bool = False, logging_level: str = "INFO") -> bool:
        if self.step == "teardown-fails":  # register_death after a lost connection
            raise RedisConnectionError("Connection reset by peer")
        if self.step == "stop":
            self._shutdown_requested_date = datetime.now(UTC)
        # "quits": RQ logs "found an unhandled exception, quitting" and returns normally
        return True


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ScriptedWorker]]:
    monkeypatch.setattr(runner, "SimpleWorker", ScriptedWorker)
    monkeypatch.setattr(runner, "RESTART_PAUSE_SECONDS", 0.0)
    ScriptedWorker.built = 0
    yield ScriptedWorker
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_loop_restarts_until_a_stop_request(
    scripted: type[ScriptedWorker], r: redis.Redis, settings: Settings
) -> None:
    scripted.steps = ["setup-fails", "quits", "teardown-fails", "setup-fails", "stop"]
    assert runner._work(settings, r, burst=False) is True
    assert scripted.built == 5 and not scripted.steps


def test_burst_still_reports_a_lost_redis(
    scripted: type[ScriptedWorker], r: redis.Redis, settings: Settings
) -> None:
    scripted.steps = ["setup-fails"]
    with pytest.raises(RedisConnectionError):
        runner._work(settings, r, burst=True)
    scripted.steps = ["quits"]
    assert runner._work(settings, r, burst=True) is True  # a burst ends when the loop ends


def test_worker_process_outlives_redis_flapping() -> None:
    """Redis killed and restarted 12 times at uneven moments; the worker lives and drains."""
    server = RedisServer()
    rng = random.Random(7)
    settings = make_settings(server.url)
    worker = Process(settings, "worker")
    try:
        time.sleep(1.0)
        for _ in range(12):
            server.kill()
            time.sleep(rng.uniform(0.0, 0.8))
            server.start()
            time.sleep(rng.uniform(0.0, 0.8))
            assert worker.proc.poll() is None, "the worker died:\n" + worker.output()[-3000:]
        client = server.client()
        wait_until(lambda: bool(client.smembers("rq:workers")), 20, "a registered RQ worker")
        assert worker.stop() == 0
    finally:
        worker.kill()
        server.stop()
