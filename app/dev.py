"""`injixo-freshchat dev`: Redis (reused or private), web and worker in one command."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from cryptography.fernet import Fernet

STATE_DIR = Path(".dev")


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, ValueError):
        return False


def start_embedded() -> tuple[Callable[[], None], str]:
    """Fallback when there is no redis-server: the embedded one (`app.dev_redis`)."""
    from app.dev_redis import start  # imports fakeredis: only when it is needed

    url, stop = start(free_port())
    deadline = time.monotonic() + 10
    while not _answers(url):
        if time.monotonic() > deadline:
            raise SystemExit("dev: the embedded Redis did not start")
        time.sleep(0.05)
    return stop, url


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server with AOF in `directory`; returns the process and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("dev: no redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("dev: the private redis-server did not start")
        time.sleep(0.05)
    return proc, url


def _persistent_secret(name: str, make: str) -> str:
    STATE_DIR.mkdir(exist_ok=True)
    path = STATE_DIR / name
    if not path.exists():
        path.write_text(make)
        path.chmod(0o600)
    return path.read_text().strip()


def run_dev(port: int | None = None) -> int:
    """Run everything until Ctrl-C (or SIGTERM), then stop it all."""
    env = dict(os.environ)
    procs: list[subprocess.Popen[bytes]] = []
    tmp: tempfile.TemporaryDirectory[str] | None = None
    stop_embedded: Callable[[], None] | None = None
    url = env.get("REDIS_URL", "")
    kind = "REDIS_URL"
    if not url or not _answers(url):
        if shutil.which("redis-server"):
            tmp = tempfile.TemporaryDirectory(prefix="injixo-dev-redis-")
            redis_proc, url = start_redis(Path(tmp.name))
            procs.append(redis_proc)
            kind = "private redis-server"
        else:
            stop_embedded, url = start_embedded()
            kind = "embedded (fakeredis: no redis-server on PATH; nothing is kept on disk)"
        # A private Redis starts empty, so a fresh encryption key is fine.
        env.setdefault("ENCRYPTION_KEY", Fernet.generate_key().decode())
    env["REDIS_URL"] = url
    env.setdefault(
        "ENCRYPTION_KEY", _persistent_secret("encryption_key", Fernet.generate_key().decode())
    )
    env.setdefault("ADMIN_TOKEN", secrets.token_urlsafe(24))
    web_port = port or int(env.get("PORT", "8000"))
    env["PORT"] = str(web_port)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cli = [sys.executable, "-m", "app.cli"]
    try:
        procs.append(subprocess.Popen([*cli, "web", "--host", "127.0.0.1"], env=env))
        procs.append(subprocess.Popen([*cli, "worker"], env=env))
        base = f"http://127.0.0.1:{web_port}"
        print(f"injixo-freshchat dev\n  web:         {base}")
        print(f"  events:      {base}/v1/freshchat/events")
        print(f"  redis:       {url} ({kind})\n  admin token: {env['ADMIN_TOKEN']}")
        print("Ctrl-C stops everything.")
        sys.stdout.flush()
        while not stop["now"]:
            if any(p.poll() is not None for p in procs):
                print("dev: a process exited; stopping the rest", file=sys.stderr)
                break
            time.sleep(0.2)
    finally:
        # One at a time, the private Redis last: the worker's warm shutdown still needs it.
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if tmp is not None:
            tmp.cleanup()
        if stop_embedded is not None:
            stop_embedded()
    return 0
