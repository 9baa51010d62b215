"""The `injixo-freshchat` command and settings validation."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from app.cli import build_parser, main, version
from app.errors import ConfigError
from app.integration import Integration
from app.integrations import decrypt_secret
from app.redis_keys import RedisKeys
from app.settings import Settings, load_settings
from tests.support import (
    G1,
    ROOT,
    WEBHOOK_FIXTURES,
    apply_all,
    at,
    conv_event,
    env_for,
    post_events,
    shard_of,
    store,
)


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


def test_integrations_update_and_delete(
    env: Settings,
    capsys: pytest.CaptureFixture[str],
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    iid = add_acme(capsys)
    code, out, _ = run(capsys, "integrations", "update", iid, "--name", "Acme EU", "--json")
    body = orjson.loads(out)  # the fields PATCH /v1/integrations/{id} answers with
    assert code == 0 and set(body) == {"id", "name", "freshchat_domain", "created_at", "status"}
    assert (body["id"], body["name"], body["freshchat_domain"]) == (
        iid, "Acme EU", "acme.freshchat.com",
    )  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO("fc-NEW\n"))
    code, out, _ = run(
        capsys, "integrations", "update", iid, "--domain", "acme-eu.freshchat.com",
        "--freshchat-api-key", "-", "--skip-verify",
    )  # fmt: skip
    assert code == 0 and out == f"updated integration {iid} (Acme EU, acme-eu.freshchat.com)\n"
    stored = Integration.load(r.hget(RedisKeys(env.key_prefix).integrations(), iid) or b"")
    assert decrypt_secret(env, stored.freshchat_api_key_enc) == "fc-NEW"
    code, out, err = run(capsys, "integrations", "update", iid, "--json")
    assert (code, out) == (1, "")
    assert (
        err == "injixo-freshchat: nothing to change: give --name, --domain or --freshchat-api-key\n"
    )
    code, _, err = run(capsys, "integrations", "update", iid, "--domain", "evil.example.com")
    assert code == 1 and err.count("\n") == 1 and "not a Freshchat domain" in err
    code, _, err = run(capsys, "integrations", "update", iid, "--name", "x" * 1001)
    assert code == 1 and err == (
        "injixo-freshchat: invalid --name: String should have at most 1000 characters\n"
    )
    add_acme(capsys)
    code, _, err = run(capsys, "integrations", "update", iid, "--name", "ACME")
    assert code == 1 and "an integration named 'ACME' already exists" in err
    code, out, _ = run(capsys, "integrations", "delete", iid, "--json")
    assert code == 0 and orjson.loads(out) == {"id": iid, "status": "deleted"}
    code, _, err = run(capsys, "integrations", "update", iid, "--name", "Back")
    assert code == 1 and err == "injixo-freshchat: the integration is deleted\n"
    code, _, err = run(capsys, "integrations", "delete", "missing")
    assert code == 1 and err == "injixo-freshchat: no integration 'missing'\n"


def test_integrations_update_verifies_a_new_domain_with_the_stored_key(
    env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHCHAT_ALLOW_INSECURE", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    iid = add_acme(capsys)
    code, _, err = run(capsys, "integrations", "update", iid, "--domain", "http://127.0.0.1:9")
    assert code == 1 and "could not reach Freshchat at http://127.0.0.1:9" in err
    code, out, _ = run(capsys, "integrations", "list", "--json")
    assert orjson.loads(out)["integrations"][0]["freshchat_domain"] == "acme.freshchat.com"


def test_version_comes_from_the_package(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"injixo-freshchat {metadata.version('injixo-freshchat')}\n"

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    with open(ROOT / "pyproject.toml", "rb") as f:
        assert version() == tomllib.load(f)["project"]["version"]


def test_read_only_commands_need_no_encryption_key(
    env: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    r: redis.Redis,
) -> None:
    iid = add_acme(capsys)
    monkeypatch.chdir(tmp_path)  # no .env here either
    monkeypatch.delenv("ENCRYPTION_KEY")
    code, out, err = run(capsys, "integrations", "list", "--json")
    assert code == 0 and [i["id"] for i in orjson.loads(out)["integrations"]] == [iid], err
    assert run(capsys, "keys", "list", iid, "--json")[:2] == (0, '{\n  "api_keys": []\n}\n')
    day = ("--from", "2026-11-23T00:00:00Z", "--to", "2026-11-24T00:00:00Z")
    assert run(capsys, "contacts", iid, *day, "--csv")[0] == 0
    assert run(capsys, "changes", iid, "--since", "0")[0] == 0
    assert "ENCRYPTION_KEY" not in os.environ  # the stand-in key did not stay behind
    before = r.hgetall(RedisKeys(env.key_prefix).integrations())
    for argv in (
        ["integrations", "add", "--name", "B", "--domain", "b.freshchat.com",
         "--freshchat-api-key", "k", "--skip-verify"],
        ["integrations", "update", iid, "--freshchat-api-key", "k2", "--skip-verify"],
        ["integrations", "delete", iid],
        ["keys", "create", iid],
    ):  # fmt: skip
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "") and "ENCRYPTION_KEY: must be set" in err, argv
    assert r.hgetall(RedisKeys(env.key_prefix).integrations()) == before
    # A key that is set but wrong is an error even where none is needed: never silently replaced.
    monkeypatch.setenv("ENCRYPTION_KEY", "not-a-key")
    code, _, err = run(capsys, "integrations", "list")
    assert code == 2 and "ENCRYPTION_KEY: Value error, must be 32 url-safe" in err


def commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command line's words and its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*words, name))
            return
    yield " ".join(words), parser


def test_only_commands_that_read_go_without_the_key_and_every_one_takes_json() -> None:
    found = dict(commands(build_parser()))
    read_only = {name for name, p in found.items() if p.get_default("read_only")}
    assert read_only == {
        "integrations list", "keys list", "contacts", "changes", "deliveries", "explain",
        "webhook show", "backfill list", "backfill show",
    }  # fmt: skip
    assert [name for name, p in found.items() if "--json" not in p._option_string_actions] == []
    assert {"integrations update", "integrations delete", "dev"} <= set(found)


def test_help_says_what_each_option_does(capsys: pytest.CaptureFixture[str]) -> None:
    text = build_parser().format_help()
    assert "--version" in text and "work without ENCRYPTION_KEY" in text
    with pytest.raises(SystemExit):
        main(["integrations", "update", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # as one line, whatever the wrapping
    assert "a new domain or key is checked against Freshchat unless --skip-verify" in text
    assert "'-' reads it from standard input" in text


def test_deliveries_explain_and_state_from_the_cli(
    env: Settings, capsys: pytest.CaptureFixture[str], r: redis.Redis, client: TestClient
) -> None:
    iid = add_acme(capsys)
    _, out, _ = run(capsys, "keys", "create", iid, "--json")
    key = orjson.loads(out)["api_key"]
    chat = "5f0c7a3e-2b1d-4c8e-9a6f-0d1e2f3a4b5c"
    t = at("2026-11-23T08:07")
    assert post_events(client, key, conv_event(chat, "resolved", t, G1)).status_code == 202
    assert post_events(client, key, conv_event("other", "assigned", t, G1)).status_code == 202
    apply_all(r, env, shard_of(r, env, iid))
    code, out, _ = run(capsys, "deliveries", iid, "--conversation-id", chat, "--json")
    [delivery] = orjson.loads(out)["deliveries"]
    assert code == 0 and delivery["status"] == 202
    assert delivery["events"][0]["conversation_id"] == chat
    code, out, _ = run(capsys, "deliveries", iid)
    assert code == 0 and chat in out and "other" in out
    code, out, _ = run(capsys, "explain", iid, chat)
    assert code == 0 and f"in {G1[1]}" in out and "(group_name_in_event)" in out
    code, out, _ = run(capsys, "explain", iid, chat, "--json")
    assert orjson.loads(out)["interval_start"] == "2026-11-23T08:00:00Z"
    code, _, err = run(capsys, "explain", iid, "never-seen")
    assert code == 1 and "chat not found" in err
    code, out, _ = run(capsys, "integrations", "list", "--json")
    assert orjson.loads(out)["integrations"][0]["state"] == "receiving"


def test_webhook_set_show_delete(
    env: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    iid = add_acme(capsys)
    copied = tmp_path / "key.txt"
    copied.write_text((WEBHOOK_FIXTURES / "test_public_key_as_copied.txt").read_text())
    code, out, err = run(capsys, "webhook", "set", iid, "--public-key-file", str(copied))
    assert code == 0, err
    assert "/v1/freshchat/webhooks/" in out and "PUBLIC_URL is not set" in out
    code, out, _ = run(capsys, "webhook", "show", iid, "--json")
    hook = orjson.loads(out)
    assert hook["url"] == "/v1/freshchat/webhooks/" + hook["webhook_id"]
    monkeypatch.setenv("PUBLIC_URL", "https://wfm.example.com")
    code, out, _ = run(capsys, "webhook", "show", iid)
    assert f"https://wfm.example.com/v1/freshchat/webhooks/{hook['webhook_id']}" in out
    assert "never" in out
    bad = tmp_path / "bad.txt"
    bad.write_text("not a key")
    code, _, err = run(capsys, "webhook", "set", iid, "--public-key-file", str(bad))
    assert code == 1 and "not a valid RSA public key" in err
    code, _, err = run(capsys, "webhook", "set", iid, "--public-key-file", str(tmp_path / "no"))
    assert code == 1 and "cannot read --public-key-file" in err
    code, out, _ = run(capsys, "webhook", "delete", iid)
    assert code == 0 and "deleted" in out
    code, _, err = run(capsys, "webhook", "show", iid)
    assert code == 1 and "has no Freshchat webhook" in err
