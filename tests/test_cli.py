"""The `injixo-freshchat` command and settings validation."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
import redis

from app.cli import main
from app.errors import ConfigError
from app.settings import Settings, load_settings
from tests.support import G1, apply_all, at, conv_event, env_for, shard_of, store


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env_for(settings).items():
        monkeypatch.setenv(name, value)
    return settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def add_acme(capsys: pytest.CaptureFixture[str]) -> str:
    """`integrations add` for an integration named Acme; its id."""
    code, out, _ = run(
        capsys, "integrations", "add", "--name", "Acme", "--domain", "acme.freshchat.com",
        "--freshchat-api-key", "fc-KEY", "--skip-verify", "--json",
    )  # fmt: skip
    assert code == 0
    iid: str = orjson.loads(out)["id"]
    return iid


def test_integrations_and_keys(
    env: Settings, capsys: pytest.CaptureFixture[str], r: redis.Redis
) -> None:
    iid = add_acme(capsys)
    code, out, _ = run(capsys, "integrations", "list", "--json")
    assert [i["id"] for i in orjson.loads(out)["integrations"]] == [iid]
    code, out, _ = run(capsys, "integrations", "list")
    assert iid in out and "Acme" in out and "fc-KEY" not in out
    code, out, _ = run(capsys, "keys", "create", iid, "--json")
    key = orjson.loads(out)
    assert set(key) == {"key_id", "api_key", "prefix"}
    code, out, _ = run(capsys, "keys", "revoke", iid, key["key_id"], "--json")
    assert code == 0 and orjson.loads(out) == {"key_id": key["key_id"], "revoked": True}
    code, out, _ = run(
        capsys,
        "contacts",
        iid,
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
        "--csv",
    )
    assert code == 0 and out.splitlines() == ["interval_start,queue,contacts"]


def test_errors_are_one_line_and_non_zero(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "integrations", "add", "--name", "A", "--domain", "evil.example.com",
        "--freshchat-api-key", "k", "--skip-verify", "--json",
    )  # fmt: skip
    assert code == 1 and out == "" and err.count("\n") == 1 and "not a Freshchat domain" in err
    code, _, err = run(capsys, "keys", "create", "missing", "--json")
    assert code == 1 and "no integration" in err
    code, _, err = run(
        capsys, "contacts", "x", "--from", "2026-11-23T00:10:00Z", "--to", "2026-11-24T00:00:00Z"
    )
    assert code == 1 and "aligned" in err


def test_unreachable_redis(
    env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    code, _, err = run(capsys, "integrations", "list")
    assert code == 1 and "cannot reach Redis" in err


def test_settings_errors_are_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    for name in ("ADMIN_TOKEN", "ENCRYPTION_KEY", "READER_TOKENS", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "ADMIN_TOKEN: must be set" in err.value.message
    assert "ENCRYPTION_KEY: must be set" in err.value.message
    monkeypatch.setenv("ADMIN_TOKEN", "short")
    monkeypatch.setenv("ENCRYPTION_KEY", "not-a-key-SECRETVALUE")
    monkeypatch.setenv("PORT", "99999")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "ADMIN_TOKEN: String should have at least 16 characters" in err.value.message
    assert "Fernet key" in err.value.message and "PORT" in err.value.message
    assert (
        "SECRETVALUE" not in err.value.message and "short" not in err.value.message.split(":")[-1]
    )


def test_console_script_help_and_config_exit_code(tmp_path: object) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "injixo-freshchat")
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("integrations", "keys", "contacts", "worker", "web", "dev"):
        assert command in help_text
    bad = subprocess.run(
        [exe, "integrations", "list"], capture_output=True, text=True, cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"], "ADMIN_TOKEN": "x"},
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("injixo-freshchat: invalid settings:")


def test_contacts_with_a_zone_and_the_changes_since_a_revision(
    env: Settings, capsys: pytest.CaptureFixture[str], r: redis.Redis
) -> None:
    iid = add_acme(capsys)
    shard = shard_of(r, env, iid)
    # Europe/Berlin's clock goes back at 01:00Z on 2026-10-25.
    store(r, env, iid, shard, [conv_event("c1", "resolved", at("2026-10-25T00:30"), G1)])
    apply_all(r, env, shard)
    day = ("--from", "2026-10-25T00:00:00+02:00", "--to", "2026-10-26T00:00:00+01:00")
    code, out, _ = run(
        capsys, "contacts", iid, *day, "--interval", "60", "--tz", "Europe/Berlin", "--json"
    )
    body = orjson.loads(out)
    assert code == 0 and body["from"] == "2026-10-25T00:00:00+02:00"
    assert [(x["interval_start"], x["contacts"]) for x in body["rows"]] == [
        ("2026-10-25T02:00:00+02:00", 1)
    ]
    revision = body["revision"]
    store(r, env, iid, shard, [conv_event("c2", "resolved", at("2026-10-25T01:30"), G1)])
    apply_all(r, env, shard)
    code, out, _ = run(capsys, "changes", iid, "--since", revision, "--json")
    feed = orjson.loads(out)
    assert code == 0 and int(feed["revision"]) > int(revision)
    assert feed["changes"] == [{"interval_start": "2026-10-25T01:30:00Z", "queue": G1[1]}]
    code, out, _ = run(capsys, "changes", iid, "--since", feed["revision"])
    assert code == 0 and out.startswith("no changes")
    code, _, err = run(capsys, "changes", iid, "--since", "yesterday")
    assert code == 1 and "`since` must be a revision" in err
    code, _, err = run(
        capsys,
        "contacts",
        iid,
        "--from",
        "2026-10-25T00:00:00",
        "--to",
        "2026-10-26T00:00:00",
        "--interval",
        "60",
        "--tz",
        "Europe/Berlin",
    )
    assert code == 1 and "needs its UTC offset" in err
