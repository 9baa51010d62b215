"""Shared benchmark plumbing: private Redis, subprocesses, CPU accounting, payloads, rows."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from redis import Redis

from app.compact import Compact, Kind, chat_key
from app.ingest import EVENTS_PATH as EVENTS_PATH
from app.integration import NewIntegration
from app.integrations import Integrations
from app.redis_client import async_data_client
from app.settings import Settings
from tests.redis_server import RedisServer
from tests.redis_server import free_port as free_port
from tests.support import READER_TOKEN, conv_event, env_for, make_settings

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHAT_PLACEHOLDER = "CHATIDPLACEHOLDER"
RATE_LIMIT = 1_000_000  # per integration; the limiter still runs, it just never refuses
NO_PERSISTENCE = ("--appendonly", "no", "--save", "")

GROUPS: tuple[tuple[str, str], ...] = (
    ("80000001", "Customer Support"),
    ("80000002", "Billing"),
    ("80000003", "Technical Support \u2013 EMEA"),
    ("80000004", "Sales | Inbound"),
    ("80000005", "VIP: Enterprise 🚀"),
    ("80000006", "Onboarding"),
    ("80000007", "Returns & Refunds"),
    ("80000008", "Kundenservice DACH"),
    ("80000009", "Soporte Técnico"),
    ("80000010", "Partner Desk"),
    ("80000011", "Escalations (Tier 2)"),
    ("80000012", "Night Shift APAC"),
)


def log(message: str) -> None:
    """Progress line on stderr (the table goes to stdout)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- Redis and settings


@contextmanager
def private_redis(appendfsync: str | None = None) -> Iterator[RedisServer]:
    """A redis-server of our own: no persistence, or AOF with the given appendfsync."""
    extra: Sequence[str] = NO_PERSISTENCE if appendfsync is None else ("--save", "")
    server = RedisServer(*extra, appendfsync=appendfsync or "everysec")
    try:
        yield server
    finally:
        server.stop()


def bench_settings(url: str, **overrides: Any) -> Settings:
    """Test-style settings with production-like drain parameters."""
    return make_settings(
        url,
        drain_lease_seconds=20.0,
        drain_time_budget_seconds=600.0,
        rate_limit_events_per_second=RATE_LIMIT,
        **overrides,
    )


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a subprocess of the product (one web process)."""
    env = {k: v for k, v in os.environ.items() if k not in {"PORT", "REDIS_URL"}}
    env.update(env_for(settings))
    env["WEB_CONCURRENCY"] = "1"
    env["DRAIN_TIME_BUDGET_SECONDS"] = str(settings.drain_time_budget_seconds)
    env["BENCH_REDIS_URL"] = settings.redis_url
    env["RATE_LIMIT_EVENTS_PER_SECOND"] = str(RATE_LIMIT)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Tenant:
    """An integration with an injixo API key."""

    iid: str
    shard: int
    api_key: str


def create_tenant(
    settings: Settings, name: str = "Bench Co", domain: str = "bench.freshchat.com"
) -> Tenant:
    """Create an integration and a key through the product's own admin code."""

    async def go() -> Tenant:
        redis = async_data_client(settings)
        try:
            integrations = Integrations(redis, settings)
            new = NewIntegration(name=name, freshchat_domain=domain, freshchat_api_key="fc-key")
            created = await integrations.create(new, None)
            key = await integrations.create_key(created.id)
            return Tenant(created.id, created.shard, key["api_key"])
        finally:
            await redis.aclose()

    return asyncio.run(go())


# ---------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its threads included), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not go within 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running(
    args: Sequence[str], env: dict[str, str], name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in its own session (Ctrl-C reaches only us); always stopped afterwards."""
    errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=errors,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        died = proc.poll()
        stop_process(proc)
        if died is not None or proc.returncode not in (0, -signal.SIGTERM, None):
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace")
            if tail.strip():
                log(
                    f"{name} exited with {proc.returncode}"
                    f" ({'before' if died is not None else 'when'} asked to stop):\n{tail}"
                )
        errors.close()


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 30) -> None:
    """Wait until something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout} s")


@dataclass(frozen=True)
class Finished:
    """A child that ran to completion, with its own CPU use."""

    returncode: int
    stdout: bytes
    wall_s: float
    cpu_s: float


def run_measured(args: Sequence[str], env: dict[str, str], timeout: float) -> Finished:
    """Run a child to completion and read its CPU time from wait4 (children included)."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    began = time.monotonic()
    proc = subprocess.Popen(
        list(args), cwd=ROOT, env=env, stdout=out, stderr=None, start_new_session=True
    )
    try:
        deadline = began + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not finish within {timeout} s")
            time.sleep(0.01)
        wall = time.monotonic() - began
        out.seek(0)
        return Finished(proc.returncode, out.read(), wall, usage.ru_utime + usage.ru_stime)
    finally:
        stop_process(proc)
        out.close()


# ---------------------------------------------------------------- payloads


def uuid_of(rng: random.Random) -> str:
    """A random version-4 UUID from a seeded generator."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def body_template(
    status: str, time_ms: int, group: tuple[str, str] | None, indent: bool = False
) -> tuple[str, str]:
    """A realistic payload split around the conversation id (~1.8 KB; ~2.5 KB indented)."""
    resolved = time_ms if status == "resolved" else None
    payload = conv_event(CHAT_PLACEHOLDER, status, time_ms, group, resolved_time_ms=resolved)
    option = orjson.OPT_INDENT_2 if indent else None
    prefix, _, suffix = orjson.dumps(payload, option=option).decode().partition(CHAT_PLACEHOLDER)
    return prefix, suffix


def mixed_templates(time_ms: int, indent: bool = False) -> list[tuple[str, str]]:
    """A chat's life in three requests: new, assigned, resolved (a third terminal)."""
    return [
        body_template("new", time_ms, None, indent),
        body_template("assigned", time_ms, GROUPS[0], indent),
        body_template("resolved", time_ms, GROUPS[0], indent),
    ]


def batch_body(templates: Sequence[tuple[str, str]], events: int, first: int, tag: int) -> bytes:
    """A JSON array of `events` payloads cycling through the templates, fresh chat ids."""
    parts = []
    for i in range(first, first + events):
        prefix, suffix = templates[i % len(templates)]
        parts.append(f"{prefix}{tag:08x}-0000-4000-8000-{i // len(templates):012x}{suffix}")
    return ("[" + ",".join(parts) + "]").encode()


def existing_chat(index: int) -> str:
    """Key part of a pre-populated chat (22 characters, like a UUID chat's)."""
    return f"pre{index:019d}"


def mixed_compacts(
    n: int, iids: Sequence[str], seed: int, start_ms: int, existing: int = 0
) -> list[bytes]:
    """n encoded compact events: ~a third terminal (a tenth of those deleted), shuffled.

    Each new chat gets created / assigned / terminal events. With `existing` chats per
    integration already tracked, a quarter of the events touch those chats instead.
    """
    rng = random.Random(seed)
    out: list[bytes] = []

    def add(iid: str, chat: str, kind: Kind, t: int, gid: str, gname: str) -> None:
        c = Compact(chat=chat, kind=kind, time_ms=t, group_id=gid, group_name=gname)
        out.append(c.encode(iid))

    while len(out) < n:
        iid = iids[rng.randrange(len(iids))]
        gid, gname = GROUPS[rng.randrange(len(GROUPS))]
        t = start_ms + rng.randrange(86_400_000)
        if existing and rng.random() < 0.25:
            kind = Kind.SOLVED if rng.random() < 0.34 else Kind.OTHER
            add(iid, existing_chat(rng.randrange(existing)), kind, t, gid, gname)
            continue
        chat = chat_key(uuid_of(rng))
        add(iid, chat, Kind.OTHER, t, "", "")
        add(iid, chat, Kind.OTHER, t + 60_000, gid, gname)
        add(iid, chat, Kind.DELETED if rng.random() < 0.1 else Kind.SOLVED, t + 600_000, gid, gname)
    del out[n:]
    rng.shuffle(out)
    return out


def terminal_chats(encoded: Sequence[bytes]) -> int:
    """Distinct (integration, chat) pairs with a terminal event: what the counts must sum to."""
    chats = set()
    for raw in encoded:
        iid, chat, kind, *_ = orjson.loads(raw)
        if kind != Kind.OTHER:
            chats.add((iid, chat))
    return len(chats)


def counted(redis: Redis, settings: Settings, shard: int) -> int:
    """Sum of every 15-minute counter of a shard (all integrations)."""
    total = 0
    pattern = f"{settings.key_prefix}:{{{shard}}}:n:*"
    for key in redis.scan_iter(pattern, count=1000):
        total += sum(int(v) for v in redis.hvals(key))
    return total


def stream_key(settings: Settings, shard: int) -> str:
    """The shard's pending-event stream."""
    return f"{settings.key_prefix}:{{{shard}}}:ev"


def xadd_all(redis: Redis, stream: str, encoded: Sequence[bytes], chunk: int = 2000) -> None:
    """Append encoded events to a shard stream in pipelines (as the ingest script does)."""
    for i in range(0, len(encoded), chunk):
        with redis.pipeline(transaction=False) as pipe:
            for item in encoded[i : i + chunk]:
                pipe.xadd(stream, {"e": item})
            pipe.execute()


# ---------------------------------------------------------------- drain in a child process


@dataclass(frozen=True)
class DrainRun:
    """One timed drain of a shard in its own worker process."""

    events: int
    seconds: float
    cpu_s: float
    redis_cpu_s: float

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds else 0.0


def run_drain(
    settings: Settings,
    shard: int | Sequence[int],
    expected: int,
    redis_pid: int = 0,
    timeout: float = 300,
) -> DrainRun:
    """Time `Drainer.drain` in a fresh process until the shards' streams are empty."""
    env = process_env(settings)
    shards = [shard] if isinstance(shard, int) else list(shard)
    before = cpu_seconds(redis_pid) if redis_pid else 0.0
    args = [PY, "-m", "bench.drainer", *map(str, shards)]
    done = run_measured(args, env, timeout)
    redis_cpu = cpu_seconds(redis_pid) - before if redis_pid else 0.0
    if done.returncode != 0:
        raise RuntimeError(f"drainer failed with {done.returncode}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    if result["applied"] != expected or result["left"] != 0:
        raise RuntimeError(
            f"drain applied {result['applied']} of {expected}, left {result['left']}"
        )
    return DrainRun(result["applied"], result["seconds"], done.cpu_s, redis_cpu)


# ---------------------------------------------------------------- statistics and table


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    measure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None


def fmt_rate(x: float) -> str:
    """A per-second rate with thousands separators."""
    return f"{x:,.0f}/s"


def fmt_ms(x: float) -> str:
    """Milliseconds."""
    return f"{x:.1f} ms" if x < 100 else f"{x:,.0f} ms"


def reader_headers() -> dict[str, str]:
    """Authorization for the read API."""
    return {"Authorization": f"Bearer {READER_TOKEN}"}
