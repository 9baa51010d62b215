"""A private redis-server the tests own: start, stop, SIGKILL and restart it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """redis-server on a free port with its own data directory."""

    def __init__(self, *extra: str, appendfsync: str = "everysec") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="injixo-test-redis-"))
        self.extra = list(extra)
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """Connection URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new synchronous client."""
        return redis.Redis(port=self.port, socket_connect_timeout=2)

    def start(self) -> None:
        """Start (or restart) on the same port and data directory."""
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
            "--appendfsync", self.appendfsync, "--loglevel", "warning", *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Stop and remove the data directory."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisSentinel:
    """A Sentinel (redis-server --sentinel) on a free port, watching one master by name."""

    def __init__(self, master: RedisServer, name: str = "rq-master") -> None:
        self.port = free_port()
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix="injixo-test-sentinel-"))
        config = self.dir / "sentinel.conf"  # Sentinel rewrites its config: a file of its own
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
        )
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, str(config), "--sentinel", "--loglevel", "warning"], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        client = redis.Redis(port=self.port, socket_connect_timeout=2)
        while True:
            try:
                if client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", name):  # type: ignore[no-untyped-call]
                    break
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis sentinel on port {self.port} did not start")
            time.sleep(0.02)
        client.close()

    @property
    def url(self) -> str:
        """RQ_REDIS_URL naming the watched master through this sentinel (database 0)."""
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}/0"

    def stop(self) -> None:
        """Stop and remove the config directory."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
