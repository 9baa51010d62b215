"""`injixo-freshchat dev`: Redis (reused or private), web and worker in one command."""

from __future__ import annotations

import ctypes
import fcntl
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import orjson
import redis
from cryptography.fernet import Fernet

from app.errors import AppError
from app.settings import load_settings

if TYPE_CHECKING:
    from app.cli import Given

STATE_DIR = Path(".dev")
READY_SECONDS = 60  # the web process answers in about 2 s; a minute covers a busy machine
STOP_SECONDS = 20  # longer than a drain's time budget: the worker finishes its batch
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DevError(AppError):
    """Why `dev` could not start, or had to stop."""

    reason = "dev"


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` (bound as uvicorn and Redis do)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, ValueError):
        return False


def _healthy(base: str) -> bool:
    try:  # trust_env=False: a proxy from the environment must not answer for loopback
        with httpx.Client(trust_env=False, timeout=1) as client:
            return client.get(base + "/healthz").status_code == 200
    except httpx.HTTPError:
        return False


class _Stop:
    """Set by SIGINT/SIGTERM/SIGHUP. A plain flag: a handler must not take locks."""

    requested = False

    def request(self, signum: int, frame: object) -> None:
        """The signal handler."""
        self.requested = True


def _dies_with_parent() -> Callable[[], None] | None:
    """Linux: a child gets SIGTERM when dev dies (even by SIGKILL), so nothing is orphaned."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def arm() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # dev died before the call above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


@dataclass
class _Child:
    """One process dev started, stopped when its ExitStack closes."""

    name: str
    proc: subprocess.Popen[bytes]

    def exit_reason(self) -> str | None:
        """How it ended, or None while it runs."""
        code = self.proc.poll()
        if code is None:
            return None
        if code < 0:
            return f"the {self.name} was killed by {signal.Signals(-code).name}"
        return f"the {self.name} exited with code {code}"

    def stop(self) -> None:
        """SIGTERM (a warm shutdown for each of ours), SIGKILL if it takes too long."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _spawn(stack: ExitStack, name: str, argv: list[str]) -> _Child:
    # Its own process group: Ctrl-C reaches only dev, which stops the children one at a
    # time (Redis last). A second SIGINT would turn RQ's warm shutdown into a cold one.
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, process_group=0, preexec_fn=_dies_with_parent()
    )
    child = _Child(name, proc)
    stack.callback(child.stop)
    return child


@contextmanager
def _lock() -> Iterator[None]:
    """One dev per directory: two redis-servers on one .dev/redis would corrupt it."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with (STATE_DIR / "lock").open("w") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevError(
                f"dev: another `injixo-freshchat dev` runs in this directory ({STATE_DIR}/lock)"
            ) from None
        yield


def _kept(name: str, make: Callable[[], str]) -> str:
    """The value kept in .dev/`name`, made (mode 0600 from the start) on first use."""
    path = STATE_DIR / name
    with suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make() + "\n")
    return path.read_text().strip()


def _secret(name: str, given: str | None, make: Callable[[], str], keep: bool) -> tuple[str, str]:
    """A setting: from the environment, else kept in .dev/ (stable), else throw-away."""
    if given:
        return given, "from the environment or .env"
    if not keep:
        return make(), "throw-away"
    return _kept(name, make), f"kept in {STATE_DIR / name}"


def _redis_port(keep: bool) -> int:
    """A kept Redis keeps its port too, so an export block pasted earlier still works."""
    if not keep:
        return free_port()
    with suppress(OSError, ValueError):
        port = int((STATE_DIR / "redis_port").read_text())
        if port_free(port):
            return port
    port = free_port()
    (STATE_DIR / "redis_port").write_text(f"{port}\n")
    return port


def _redis_server(stack: ExitStack, binary: str, port: int, keep: bool) -> tuple[_Child, str]:
    """A private redis-server: AOF in .dev/redis (kept), or nothing on disk (throw-away); it
    and what it is."""
    if keep:
        directory = (STATE_DIR / "redis").resolve()
        directory.mkdir(mode=0o700, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        about = f"private redis-server; data kept in {STATE_DIR}/redis across restarts"
    else:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="injixo-dev-")))
        persistence = ["--appendonly", "no"]
        about = "private redis-server, throw-away (--ephemeral): nothing is kept"
    log = directory / "redis.log"
    child = _spawn(
        stack,
        "private redis-server",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", *persistence, "--logfile", str(log), "--loglevel", "warning"],
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while not _answers(url):
        if child.proc.poll() is not None or time.monotonic() > deadline:
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            why = lines[-1].split(" # ", 1)[-1] if lines else "no log"
            raise DevError(f"dev: the private redis-server did not start: {why}")
        time.sleep(0.05)
    return child, about


def _embedded(stack: ExitStack, port: int, keep: bool) -> str:
    """The embedded Redis (no redis-server on PATH); kept in a snapshot file unless throw-away."""
    from app.dev_redis import start  # imports fakeredis: only when it is needed

    snapshot = STATE_DIR / "embedded-redis.pickle" if keep else None
    try:
        _, stop = start(port, snapshot)
    except OSError as exc:
        raise DevError(f"dev: the embedded Redis cannot listen on port {port}: {exc}") from None
    stack.callback(stop)
    if snapshot is None:
        return "embedded Redis (no redis-server on PATH), throw-away (--ephemeral): nothing is kept"
    return (
        "embedded Redis (no redis-server on PATH); data kept in "
        f"{snapshot} across restarts (saved every second and on exit)"
    )


def _redis(
    stack: ExitStack, given: str | None, reusing: bool, keep: bool
) -> tuple[str, str, list[_Child]]:
    """REDIS_URL if it answers, else a private Redis; its URL, what it is, its process."""
    if given and reusing:
        return given, "REDIS_URL; data stays in that Redis", []
    port = _redis_port(keep)
    url = f"redis://127.0.0.1:{port}/0"
    note = f"; REDIS_URL {given} did not answer" if given and given != url else ""
    binary = shutil.which("redis-server")
    if binary is None:
        return url, _embedded(stack, port, keep) + note, []
    child, about = _redis_server(stack, binary, port, keep)
    return url, about + note, [child]


def _check(children: list[_Child]) -> None:
    for child in children:
        reason = child.exit_reason()
        if reason is not None:
            raise DevError(f"dev: {reason}; stopped the rest")


def _banner(base: str, redis_url: str, about: str, env: dict[str, str], token_from: str) -> str:
    rq_url = env.get("RQ_REDIS_URL")
    rq_line = [f"  RQ's redis:    {rq_url}  (RQ_REDIS_URL)"] if rq_url else []
    return "\n".join(
        [
            "",  # apart from the children's log lines around it
            "injixo-freshchat dev is running",
            f"  page:          {base}/",
            f"  events:        {base}/v1/freshchat/events",
            f"  RQ dashboard:  {base}/rq",
            f"  metrics:       {base}/metrics",
            f"  OpenAPI:       {base}/openapi.json",
            f"  admin token:   {env['ADMIN_TOKEN']}  ({token_from})",
            f"  redis:         {redis_url}  ({about})",
            *rq_line,
            "The CLI against this instance (paste into a shell):",
            *(f"export {name}={shlex.quote(value)}" for name, value in env.items()),
            "Ctrl-C stops everything.",
            "",
        ]
    )


def _run(
    stack: ExitStack, stop: _Stop, given: Given, port: int | None, ephemeral: bool, as_json: bool
) -> int:
    reusing = bool(given.redis_url and _answers(given.redis_url))
    keep = reusing or not ephemeral  # data in a Redis that stays needs the same key next time
    if keep:
        stack.enter_context(_lock())
    token, token_from = _secret(
        "admin_token", given.admin_token, lambda: secrets.token_urlsafe(24), keep
    )
    key, _ = _secret(
        "encryption_key", given.encryption_key, lambda: Fernet.generate_key().decode(), keep
    )
    # Set here, the children inherit them; .env (read by every process) cannot override them.
    os.environ.update(ADMIN_TOKEN=token, ENCRYPTION_KEY=key)
    if port is not None:
        os.environ["PORT"] = str(port)
    settings = load_settings()  # every setting checked before anything starts
    web_port = settings.port
    # RQ on its own Redis only if RQ_REDIS_URL says so (§14); dev never starts that one.
    rq_url = settings.rq_redis_url
    if rq_url and not _answers(rq_url):
        raise DevError(
            f"dev: RQ_REDIS_URL {rq_url} does not answer; start that Redis, or unset "
            "RQ_REDIS_URL to keep RQ in the same Redis as the data"
        )
    if not port_free(web_port):
        raise DevError(
            f"dev: port {web_port} is already in use; stop what listens there or choose "
            "another with --port or PORT"
        )
    redis_url, about, children = _redis(stack, given.redis_url, reusing, keep)
    os.environ["REDIS_URL"] = redis_url
    cli = [sys.executable, "-m", "app.cli"]
    children.append(_spawn(stack, "web process", [*cli, "web", "--host", "127.0.0.1"]))
    children.append(_spawn(stack, "worker", [*cli, "worker"]))
    base = f"http://127.0.0.1:{web_port}"
    deadline = time.monotonic() + READY_SECONDS
    while not _healthy(base):
        if stop.requested:
            return 0
        _check(children)
        if time.monotonic() > deadline:
            raise DevError(f"dev: the web process did not answer {base}/healthz in time")
        time.sleep(0.1)
    rq_env = {"RQ_REDIS_URL": rq_url} if rq_url else {}
    env = {"REDIS_URL": redis_url, **rq_env, "ADMIN_TOKEN": token, "ENCRYPTION_KEY": key}
    if as_json:
        urls = {"page": base + "/", "events": base + "/v1/freshchat/events", "rq": base + "/rq"}
        urls |= {"metrics": base + "/metrics", "openapi": base + "/openapi.json"}
        text = orjson.dumps({**urls, "redis": about, "env": env}).decode()
    else:
        text = _banner(base, redis_url, about, env, token_from)
    print(text, flush=True)
    while not stop.requested:
        _check(children)
        time.sleep(0.2)
    return 0


def run_dev(
    given: Given, port: int | None = None, ephemeral: bool = False, as_json: bool = False
) -> int:
    """Run Redis, web and worker until Ctrl-C (or SIGTERM/SIGHUP) or until one of them fails.

    The ExitStack stops them in reverse order: the worker, the web process, Redis last (the
    worker's warm shutdown still needs it), then the lock on .dev/.
    """
    stop = _Stop()
    previous = {signum: signal.signal(signum, stop.request) for signum in SIGNALS}
    try:
        with ExitStack() as stack:
            code = _run(stack, stop, given, port, ephemeral, as_json)
        if stop.requested:
            print("injixo-freshchat dev: stopped", file=sys.stderr)
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
