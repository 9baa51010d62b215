"""`injixo-freshchat dev` on a machine with no Redis configured: serves, counts, stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.redis_server import free_port
from tests.support import EVENTS, at, bearer, conv_event, wait_until

pytestmark = pytest.mark.e2e


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("redis_on_path", [True, False], ids=["redis-server", "embedded"])
def test_dev_starts_everything_counts_an_event_and_stops_on_ctrl_c(
    tmp_path: Path, redis_on_path: bool
) -> None:
    port = free_port()
    secrets = ("REDIS_URL", "ADMIN_TOKEN", "ENCRYPTION_KEY")
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    env["PORT"] = str(port)
    if not redis_on_path:
        env["PATH"] = str(tmp_path)  # no redis-server here: dev falls back to the embedded one
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "dev"], cwd=tmp_path, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "admin token:" in log.read_text(), 30, "dev to print the admin token")
        text = log.read_text()
        token = re.search(r"admin token: (\S+)", text)
        redis_url = re.search(r"redis:\s+(\S+)", text)
        assert token and redis_url and f"web:         {base}" in text
        assert redis_url.group(1) != "redis://127.0.0.1:6379/0"  # a private Redis was started
        assert ("embedded" in text) is not redis_on_path
        admin = bearer(token.group(1))

        def up() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the web process")
        created = httpx.post(
            base + "/v1/integrations",
            json={
                "name": "Dev",
                "freshchat_domain": "dev.freshchat.com",
                "freshchat_api_key": "k",
                "verify": False,
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        iid = created.json()["id"]
        key = httpx.post(f"{base}/v1/integrations/{iid}/api-keys", headers=admin).json()["api_key"]
        event = conv_event("dev-chat", "resolved", at("2026-11-23T08:05"), ("g1", "Support"))
        posted = httpx.post(base + EVENTS, json=event, headers=bearer(key))
        assert posted.status_code == 202

        def counted() -> bool:
            rows = httpx.get(
                f"{base}/v1/integrations/{iid}/contacts",
                params={"from": "2026-11-23T08:00:00Z", "to": "2026-11-23T09:00:00Z"},
                headers=admin,
            ).json()["rows"]
            return bool(
                rows
                == [{"interval_start": "2026-11-23T08:00:00Z", "queue": "Support", "contacts": 1}]
            )

        wait_until(counted, 30, "the event to be counted")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(timeout=30) == 0
        wait_until(lambda: not group_alive(proc.pid), 10, "every child process to exit")
        assert key not in log.read_text()
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
