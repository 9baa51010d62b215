"""Shared pieces of the reliability suite (§11): real processes started and always stopped,
clients that retry like the Freshworks app, secret scans, and the figures the suite reports
(general test helpers live in tests.support)."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.e2e.processes import Process, Web
from tests.support import ADMIN, EVENTS, IPARAMS_MARKER, all_stored_bytes, conv_event, iso

P = TypeVar("P", bound=Process)
RETRIES = 5  # the Freshworks app retries 429/5xx/network errors up to 5 times

# --- figures -------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the suite did: events sent, faults injected, hostile inputs, lost, double-counted."""

    started: float = field(default_factory=time.monotonic)
    totals: dict[str, int] = field(
        default_factory=lambda: {"events": 0, "faults": 0, "inputs": 0, "lost": 0, "double": 0}
    )
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, test: str, **values: Any) -> None:
        """Add one test's figures (numbers in the five totals are summed) and write the file."""
        with self.lock:
            self.tests.setdefault(test, {}).update(values)
            for name in self.totals:
                if isinstance(values.get(name), int):
                    self.totals[name] += values[name]
            self.write()

    def line(self) -> str:
        """`reliability: events=…, faults=…, inputs=…, lost=0, double=0`."""
        t = self.totals
        return (
            f"reliability: events={t['events']}, faults={t['faults']}, inputs={t['inputs']}, "
            f"lost={t['lost']}, double={t['double']}, "
            f"seconds={time.monotonic() - self.started:.1f}"
        )

    def path(self) -> Path:
        """Where the JSON goes: $RELIABILITY_FIGURES or /tmp/reliability-figures.json."""
        return Path(os.environ.get("RELIABILITY_FIGURES", "/tmp/reliability-figures.json"))

    def write(self) -> None:
        """Write the figures as JSON."""
        data = {
            **self.totals,
            "seconds": round(time.monotonic() - self.started, 1),
            "tests": self.tests,
        }
        self.path().write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


FIGURES = Figures()


# --- secrets -------------------------------------------------------------------------------


@dataclass
class SecretWatch:
    """Every secret a test handed out, and every place it must never show up in clear."""

    secrets: set[str] = field(default_factory=lambda: {IPARAMS_MARKER})
    error_bodies: list[bytes] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, secret: str) -> None:
        """A secret that must not leak."""
        with self.lock:
            self.secrets.add(secret)

    def saw(self, response: httpx.Response) -> None:
        """Keep an error body for the final scan."""
        if response.status_code >= 400:
            with self.lock:
                self.error_bodies.append(response.content)

    def leaks(self, blob: bytes) -> list[str]:
        """The secrets that appear in `blob` (first 12 characters, to name them safely)."""
        with self.lock:
            return sorted(s[:12] + "…" for s in self.secrets if s.encode() in blob)

    def scan_logs(self, logs: Iterable[Path]) -> dict[str, list[str]]:
        """Leaks in these log files, by file name."""
        found = {}
        for log in logs:
            if log.exists() and (hits := self.leaks(log.read_bytes())):
                found[log.name] = hits
        return found

    def scan(self, r: redis.Redis | None) -> dict[str, list[str]]:
        """Leaks in every log and error body gathered so far and (if given) every Redis key
        and value."""
        with self.lock:
            logs = list(self.logs)
        found = self.scan_logs(logs)
        with self.lock:
            bodies = b"\n".join(self.error_bodies)
        if hits := self.leaks(bodies):
            found["error bodies"] = hits
        if r is not None and (hits := self.leaks(all_stored_bytes(r))):
            found["redis"] = hits
        return found


WATCH = SecretWatch()


# --- processes -----------------------------------------------------------------------------


class Stack:
    """Web and worker processes of one test; `close()` stops every one that is still running."""

    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_env = {"RATE_LIMIT_EVENTS_PER_SECOND": "0", **(extra_env or {})}
        self.procs: list[Process] = []

    def web(self, **env: str) -> Web:
        """Start a web process."""
        web = Web(self.settings, {**self.extra_env, **env})
        return self._track(web)

    def worker(self, *args: str, **env: str) -> Process:
        """Start a worker process."""
        return self._track(
            Process(self.settings, "worker", *args, extra_env={**self.extra_env, **env})
        )

    def _track(self, proc: P) -> P:
        self.procs.append(proc)
        WATCH.logs.append(proc.log)
        return proc

    def close(self) -> None:
        """Stop everything (SIGTERM, then SIGKILL)."""
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:  # keep stopping the others
                proc.kill()


@contextmanager
def stack(settings: Settings, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A Stack that is always closed."""
    s = Stack(settings, extra_env)
    try:
        yield s
    finally:
        s.close()


# --- API helpers ---------------------------------------------------------------------------


def create_integration(url: str, name: str, freshchat_key: str, domain: str = "") -> str:
    """Create an integration without a Freshchat check; the Freshchat key is watched."""
    WATCH.add(freshchat_key)
    body = {
        "name": name,
        "freshchat_domain": domain or f"{name.lower().replace(' ', '-')}.freshchat.com",
        "freshchat_api_key": freshchat_key,
        "verify": False,
    }
    created = httpx.post(url + "/v1/integrations", json=body, headers=ADMIN, timeout=15)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def create_key(url: str, iid: str) -> tuple[str, str]:
    """A new injixo API key (watched); returns (key id, key)."""
    response = httpx.post(f"{url}/v1/integrations/{iid}/api-keys", headers=ADMIN, timeout=15)
    assert response.status_code == 201, response.text
    data = response.json()
    WATCH.add(data["api_key"])
    return str(data["key_id"]), str(data["api_key"])


def processed(r: redis.Redis, settings: Settings) -> tuple[int, int]:
    """(applied, dead-lettered) events over all shards, from the workers' stats."""
    keys = RedisKeys(settings.key_prefix)
    applied = dead = 0
    for shard in range(settings.shards):
        stats = r.hgetall(keys.stats(shard))
        applied += int(stats.get(b"processed", 0))
        dead += int(stats.get(b"dead", 0))
    return applied, dead


@dataclass
class Delivery:
    """What happened to one request that the client retried like the Freshworks app."""

    statuses: list[int] = field(default_factory=list)  # 0: network error, no answer
    times: list[tuple[float, float]] = field(default_factory=list)  # each attempt's start, end
    errors: list[str] = field(default_factory=list)  # what went wrong where no answer came
    accepted: int = 0
    first_at: float = 0.0
    last_at: float = 0.0

    @property
    def ok(self) -> bool:
        """Some attempt got a 202."""
        return 202 in self.statuses


def deliver(
    client: httpx.Client,
    body: Any,
    *,
    retries: int = RETRIES,
    pause: float = 0.25,
    rng: random.Random | None = None,
) -> Delivery:
    """POST until a 202 or a non-retryable answer, at most 1 + `retries` attempts."""
    out = Delivery(first_at=time.monotonic())
    for attempt in range(retries + 1):
        sent_at = time.monotonic()
        try:
            response = client.post(EVENTS, json=body)
        except httpx.HTTPError as exc:
            out.statuses.append(0)
            out.errors.append(f"{type(exc).__name__} after {time.monotonic() - sent_at:.1f} s")
            out.times.append((sent_at, time.monotonic()))
        else:
            out.times.append((sent_at, time.monotonic()))
            out.statuses.append(response.status_code)
            WATCH.saw(response)
            if response.status_code in (429, 503):
                assert response.headers.get("retry-after", "").isdigit(), response.headers
            if response.status_code == 202:
                out.accepted = int(response.json()["accepted"])
                break
            if response.status_code not in (429, 500, 502, 503, 504):
                break
        if attempt < retries:
            time.sleep(pause * (1 + (rng.random() if rng else 0)))
    out.last_at = time.monotonic()
    return out


QUEUES = 32  # chat n -> its own (15-minute slot, queue) pair, so the counts name every chat


def chat_event(n: int, base: int, rng: random.Random) -> tuple[dict[str, Any], tuple[str, str]]:
    """One request = one chat, solved once; returns the payload and its (slot, queue) row."""
    slot = base + (n // QUEUES) * 900_000
    group = (f"g{n % QUEUES}", f"Q{n % QUEUES:02d}")
    event = conv_event(str(uuid.UUID(int=rng.getrandbits(128))), "resolved", slot, group)
    event["timestamp"] = slot + rng.randrange(0, 900) * 1000
    return event, (iso(slot)[:16] + "Z", group[1])


def diff(expected: dict[Any, int], actual: dict[Any, int]) -> tuple[int, int]:
    """(lost, double): contacts missing from / in excess of the expected counts."""
    lost = sum(max(0, n - actual.get(k, 0)) for k, n in expected.items())
    double = sum(max(0, n - expected.get(k, 0)) for k, n in actual.items())
    return lost, double
