"""Real web and worker processes for whole-system tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.settings import Settings
from tests.redis_server import free_port
from tests.support import ROOT, env_for, wait_until


class Process:
    """A child process running one `injixo-freshchat` command."""

    def __init__(
        self, settings: Settings, *argv: str, extra_env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, **env_for(settings), **(extra_env or {})}
        self.log = (
            Path(os.environ.get("TMPDIR", "/tmp"))
            / f"injixo-{argv[0]}-{os.getpid()}-{time.monotonic_ns()}.log"
        )
        with self.log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *argv],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        """What the process printed so far."""
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, no chance to clean up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 20 s)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class Web(Process):
    """`injixo-freshchat web` on a free port, ready when /healthz answers."""

    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        super().__init__(
            settings, "web", "--host", "127.0.0.1", "--port", str(self.port), extra_env=extra_env
        )
        self.url = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("web process exited:\n" + self.output())
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the web process")
