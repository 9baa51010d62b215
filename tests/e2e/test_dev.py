"""`injixo-freshchat dev` on a machine with no Redis configured: serves and counts, prints a
banner (once the web process answers) whose export block points the CLI at it, keeps its data
across restarts, stops cleanly on Ctrl-C and fails loudly, leaving nothing running."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from app.redis_keys import RedisKeys
from tests.redis_server import RedisServer, free_port
from tests.support import EVENTS, NO_OUTSIDE, at, bearer, conv_event, wait_until

pytestmark = pytest.mark.e2e

GIVEN = ("REDIS_URL", "ADMIN_TOKEN", "ENCRYPTION_KEY", "PORT")
BIN = Path(sys.executable).parent  # the venv's bin: python and the injixo-freshchat script
READY = "Ctrl-C stops everything."


def session(sid: int) -> list[int]:
    """Live processes of a session. dev runs in its own; its children keep it (in their own
    process groups), so this finds every one of them, orphaned or not."""
    found = []
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            found.append(int(path.parent.name))
    return found


def cmdline(pid: int) -> str:
    """A process's command line, spaces between the arguments."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Dev:
    """`injixo-freshchat dev` started in `cwd` in its own session, its output in a log."""

    def __init__(
        self,
        cwd: Path,
        *args: str,
        no_redis_server: bool = False,
        port: int | None = None,
        env_given: dict[str, str] | None = None,
    ) -> None:
        self.cwd, self.port = cwd, port or free_port()
        given = {k: v for k, v in os.environ.items() if k not in GIVEN}
        env = given | NO_OUTSIDE | {"PORT": str(self.port), "FRESHCHAT_ALLOW_INSECURE": "true"}
        env |= env_given or {}
        if no_redis_server:
            env["PATH"] = str(cwd / "no-bin")  # nothing here: dev falls back to the embedded one
        self.log = cwd / f"dev-{self.port}-{len(list(cwd.glob('dev-*.log')))}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "dev", *args], cwd=cwd, env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        """What dev and its children printed so far."""
        return self.log.read_text(errors="replace")

    def banner(self) -> str:
        """Wait for the banner; fail with the output if dev exits first."""

        def printed() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"dev exited with {self.proc.returncode}:\n{self.text()}")
            return READY in self.text()

        wait_until(printed, 60, "dev's banner")
        return self.text()

    def exports(self) -> dict[str, str]:
        """The banner's export block, as a shell would read it."""
        lines = re.findall(r"^export (\w+)=(.*)$", self.banner(), re.M)
        return {name: shlex.split(value)[0] for name, value in lines}

    def admin(self) -> dict[str, str]:
        """The admin token's Authorization header."""
        return bearer(self.exports()["ADMIN_TOKEN"])

    def ctrl_c(self) -> int:
        """What Ctrl-C in a terminal does (SIGINT to the foreground process group); the exit
        code, once dev and everything it started are gone."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.ended()

    def ended(self) -> int:
        """dev's exit code once it and everything it started have exited."""
        code = self.proc.wait(timeout=60)
        wait_until(lambda: not session(self.proc.pid), 30, "every process dev started to exit")
        return code

    def cleanup(self) -> None:
        """Whatever a failed test left running."""
        for pid in session(self.proc.pid):
            os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def integrations(self) -> list[Any]:
        """`GET /v1/integrations` → names."""
        found = httpx.get(self.base + "/v1/integrations", headers=self.admin()).json()
        return [i["name"] for i in found["integrations"]]

    def add(self, name: str) -> str:
        """Create an integration through the API; its id."""
        created = httpx.post(
            self.base + "/v1/integrations",
            json={"name": name, "freshchat_domain": "dev.freshchat.com",
                  "freshchat_api_key": "fc-dev-key", "verify": False},
            headers=self.admin(),
        )  # fmt: skip
        assert created.status_code == 201, created.text
        iid: str = created.json()["id"]
        return iid


@pytest.fixture
def started(tmp_path: Path) -> Any:
    """Starts `Dev`s; kills whatever one of them left running when the test failed."""
    devs: list[Dev] = []

    def start(*args: str, cwd: Path = tmp_path, **kw: Any) -> Dev:
        devs.append(Dev(cwd, *args, **kw))
        return devs[-1]

    yield start
    for dev in devs:
        dev.cleanup()


@pytest.mark.parametrize("no_redis_server", [False, True], ids=["redis-server", "embedded"])
def test_dev_serves_counts_and_stops_on_ctrl_c(started: Any, no_redis_server: bool) -> None:
    dev = started(no_redis_server=no_redis_server)
    text = dev.banner()
    # Printed only once the web process answers: no waiting here.
    assert httpx.get(dev.base + "/healthz", timeout=2).status_code == 200
    for path in ("/", "/v1/freshchat/events", "/rq", "/metrics", "/openapi.json"):
        assert f"{dev.base}{path}\n" in text
    exports = dev.exports()
    assert set(exports) == {"REDIS_URL", "ADMIN_TOKEN", "ENCRYPTION_KEY"}
    assert re.search(r"admin token:\s+" + re.escape(exports["ADMIN_TOKEN"]), text)
    assert exports["REDIS_URL"] != "redis://127.0.0.1:6379/0"  # a private Redis was started
    assert ("embedded Redis" in text) is no_redis_server
    assert "data kept in .dev/" in text
    iid = dev.add("Dev")
    key = httpx.post(f"{dev.base}/v1/integrations/{iid}/api-keys", headers=dev.admin()).json()
    event = conv_event("dev-chat", "resolved", at("2026-11-23T08:05"), ("g1", "Support"))
    posted = httpx.post(dev.base + EVENTS, json=event, headers=bearer(key["api_key"]))
    assert posted.status_code == 202

    def counted() -> bool:
        rows = httpx.get(
            f"{dev.base}/v1/integrations/{iid}/contacts",
            params={"from": "2026-11-23T08:00:00Z", "to": "2026-11-23T09:00:00Z"},
            headers=dev.admin(),
        ).json()["rows"]
        return bool(
            rows == [{"interval_start": "2026-11-23T08:00:00Z", "queue": "Support", "contacts": 1}]
        )

    wait_until(counted, 30, "the event to be counted")
    assert dev.ctrl_c() == 0
    assert key["api_key"] not in dev.text()


def test_the_export_block_points_the_cli_at_dev(started: Any, tmp_path: Path) -> None:
    dev = started()
    block = "\n".join(line for line in dev.banner().splitlines() if line.startswith("export "))
    clean = {k: v for k, v in os.environ.items() if k not in GIVEN}
    elsewhere = tmp_path / "elsewhere"  # no .dev/ or .env to read there
    elsewhere.mkdir()

    def cli(command: str) -> Any:
        """`command` in a shell that had the export block pasted into it."""
        done = subprocess.run(
            ["sh", "-c", f"{block}\n{command}"], cwd=elsewhere, capture_output=True, text=True,
            env={**clean, "PATH": f"{BIN}:{clean['PATH']}"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    created = cli(
        "injixo-freshchat integrations add --name Pasted --domain pasted.freshchat.com "
        "--freshchat-api-key fc-pasted --skip-verify --json"
    )
    listed = cli("injixo-freshchat integrations list --json")["integrations"]
    assert [i["id"] for i in listed] == [created["id"]]
    assert dev.integrations() == ["Pasted"]  # the CLI wrote to the instance dev serves
    key = cli(f"injixo-freshchat keys create {created['id']} --json")["api_key"]
    event = conv_event("pasted-chat", "resolved", at("2026-11-23T08:05"), ("g1", "Support"))
    assert httpx.post(dev.base + EVENTS, json=event, headers=bearer(key)).status_code == 202
    # The web process decrypts the Freshchat key the CLI encrypted (same ENCRYPTION_KEY): it
    # gets as far as calling Freshchat, instead of "cannot be decrypted".
    patched = httpx.patch(
        f"{dev.base}/v1/integrations/{created['id']}",
        json={"freshchat_domain": "http://127.0.0.1:9"},
        headers=dev.admin(),
    )
    assert patched.status_code == 502 and "could not reach Freshchat" in patched.text
    assert dev.ctrl_c() == 0


@pytest.mark.parametrize("no_redis_server", [False, True], ids=["redis-server", "embedded"])
def test_data_survives_a_restart(started: Any, tmp_path: Path, no_redis_server: bool) -> None:
    first = started(no_redis_server=no_redis_server)
    first.add("Kept")
    exports = first.exports()
    assert first.ctrl_c() == 0
    for name in ("admin_token", "encryption_key"):
        assert stat.S_IMODE((tmp_path / ".dev" / name).stat().st_mode) == 0o600
    again = started(no_redis_server=no_redis_server)
    assert again.exports() == exports  # same Redis port, token and key: a pasted block still works
    assert again.integrations() == ["Kept"]
    assert again.ctrl_c() == 0
    throwaway = started("--ephemeral", no_redis_server=no_redis_server)
    assert "throw-away (--ephemeral): nothing is kept" in throwaway.banner()
    assert throwaway.exports()["ENCRYPTION_KEY"] != exports["ENCRYPTION_KEY"]
    assert throwaway.integrations() == []
    throwaway.add("Gone")
    assert throwaway.ctrl_c() == 0
    last = started(no_redis_server=no_redis_server)
    assert last.integrations() == ["Kept"]
    assert last.ctrl_c() == 0


def test_ephemeral_writes_nothing_to_dev_dir_and_json_prints_the_banner(
    started: Any, tmp_path: Path
) -> None:
    dev = started("--ephemeral", "--json")

    def banner() -> Any:
        lines = [line for line in dev.text().splitlines() if line.startswith('{"page"')]
        return orjson.loads(lines[0]) if lines else None

    wait_until(banner, 60, "the banner as JSON")
    assert banner()["openapi"] == dev.base + "/openapi.json"
    assert set(banner()["env"]) == {"REDIS_URL", "ADMIN_TOKEN", "ENCRYPTION_KEY"}
    created = httpx.post(
        dev.base + "/v1/integrations",
        json={"name": "Gone", "freshchat_domain": "gone.freshchat.com",
              "freshchat_api_key": "k", "verify": False},
        headers=bearer(banner()["env"]["ADMIN_TOKEN"]),
    )  # fmt: skip
    assert created.status_code == 201
    assert dev.ctrl_c() == 0
    assert not (tmp_path / ".dev").exists()


def test_dev_uses_redis_url_when_it_answers(
    started: Any, tmp_path: Path, redis_server: RedisServer, r: redis.Redis
) -> None:
    dev = started(env_given={"REDIS_URL": redis_server.url})
    assert f"redis:         {redis_server.url}  (REDIS_URL; data stays in that Redis)" in (
        dev.banner()
    )
    assert dev.exports()["REDIS_URL"] == redis_server.url
    assert session(dev.proc.pid) and not any(
        "redis-server" in cmdline(pid) for pid in session(dev.proc.pid)
    )
    dev.add("In REDIS_URL")
    assert "In REDIS_URL" in str(r.hvals(RedisKeys("ifc").integrations()))
    assert dev.ctrl_c() == 0
    assert (tmp_path / ".dev" / "encryption_key").exists()  # that Redis keeps data: so the key


def test_a_port_in_use_is_a_clear_error_and_nothing_keeps_running(
    started: Any, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dev = started(port=port)
        assert dev.ended() == 1
    lines = dev.text().splitlines()
    assert lines == [
        f"injixo-freshchat: dev: port {port} is already in use; stop what listens there or "
        "choose another with --port or PORT"
    ]
    assert not (tmp_path / ".dev" / "redis").exists()  # checked before anything started


def test_invalid_settings_stop_dev_before_it_starts_anything(started: Any, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WEB_CONCURRENCY=0\n")
    dev = started()
    assert dev.ended() == 2
    assert dev.text().startswith("injixo-freshchat: invalid settings: WEB_CONCURRENCY")
    assert not (tmp_path / ".dev" / "redis").exists()


def test_a_failing_process_stops_dev_with_the_reason(started: Any, tmp_path: Path) -> None:
    dev = started()
    dev.banner()
    second = started()  # one dev per directory: they would share .dev/redis
    assert second.ended() == 1
    assert "another `injixo-freshchat dev` runs in this directory" in second.text()
    [worker] = [pid for pid in session(dev.proc.pid) if cmdline(pid).endswith("app.cli worker ")]
    os.kill(worker, signal.SIGKILL)
    assert dev.ended() == 1
    assert dev.text().splitlines()[-1] == (
        "injixo-freshchat: dev: the worker was killed by SIGKILL; stopped the rest"
    )


@pytest.mark.parametrize("no_redis_server", [False, True], ids=["redis-server", "embedded"])
def test_killing_dev_itself_leaves_nothing_running_and_loses_no_saved_data(
    started: Any, no_redis_server: bool
) -> None:
    dev = started(no_redis_server=no_redis_server)
    dev.add("Before the crash")
    assert len(session(dev.proc.pid)) == (3 if no_redis_server else 4)  # dev, web, worker, Redis
    time.sleep(1.5)  # the embedded Redis saves every second
    dev.proc.kill()  # SIGKILL: dev cannot stop anything; its children stop themselves
    assert dev.ended() == -signal.SIGKILL
    again = started(no_redis_server=no_redis_server)
    assert again.integrations() == ["Before the crash"]
    assert again.ctrl_c() == 0
