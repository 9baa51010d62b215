"""`injixo-freshchat backfill` (§13): start (as §13 writes it, and `start`), list, show,
cancel; `--wait` to a pipe prints one JSON line per change until the end, on a terminal a
live progress bar; exit 0 when done, 1 when failed or cancelled; Ctrl-C leaves it running."""

from __future__ import annotations

import os
import pty
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis

from app.backfills import Backfills
from app.cli import backfill as backfill_cli
from app.cli import main
from app.settings import Settings
from tests.backfill_support import backfill_settings, days_ago, new_integration, random_rows, today
from tests.extract_standin import ExtractStandIn, running
from tests.reliability.harness import stack
from tests.support import ROOT, env_for, wait_until
from workers.backfill import Backfiller

DAYS = 3
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def bs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Backfill settings, one report per day, and the environment the CLI reads them from."""
    values = backfill_settings(settings.redis_url, backfill_window_days=1)
    for name, value in {**env_for(values), **ENV}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(backfill_cli, "POLL_SECONDS", 0.01)
    return values


ENV = {"BACKFILL_SUBMIT_EVERY_SECONDS": "0", "BACKFILL_WINDOW_DAYS": "1"}


@pytest.fixture
def fc() -> Iterator[ExtractStandIn]:
    """The stand-in Freshchat with a few days of solved chats."""
    with running() as standin:
        standin.script.rows = random_rows(
            random.Random(7), today() - timedelta(days=DAYS), DAYS, 90
        )
        standin.script.pending_polls = 0
        yield standin


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command in this process: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def the_range() -> tuple[str, ...]:
    """`--from`/`--to` for the last DAYS days."""
    return ("--from", days_ago(DAYS), "--to", days_ago(1))


@contextmanager
def in_process_worker(bs: Settings, iid: str, **tweaks: Any) -> Iterator[dict[str, Any]]:
    """Once the command has started the integration's backfill, run it here to its end
    (a report poll waits 0.2 s: the command sees every report arrive)."""
    result: dict[str, Any] = {}
    stop = threading.Event()

    def work() -> None:
        client = redis.Redis.from_url(bs.redis_url)
        store = Backfills(client, bs)
        try:
            while not stop.is_set() and not (listed := store.list(iid)):
                time.sleep(0.01)
            if not stop.is_set():
                worker = Backfiller.build(bs, client)
                worker.poll_first_s, worker.poll_max_s = 0.2, 0.2
                for name, value in tweaks.items():
                    setattr(worker, name, value)
                try:
                    result.update(worker.run(iid, listed[0]["backfill_id"], wait_inline=True))
                finally:
                    worker.close()
        finally:
            client.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(30)


def test_start_list_show_cancel(
    bs: Settings, fc: ExtractStandIn, capsys: pytest.CaptureFixture[str], r: redis.Redis
) -> None:
    iid = new_integration(bs, fc).id
    # As §13 writes it: no `start`.
    code, out, err = run(capsys, "backfill", iid, *the_range())
    assert (code, err) == (0, "")
    [bid] = re.findall(r"started backfill (\w+) of integration " + iid, out)
    assert f"(UTC days {days_ago(DAYS)}..{days_ago(1)}, {DAYS} reports): queued" in out
    code, out, err = run(capsys, "backfill", iid, *the_range(), "--json")
    assert code == 1 and out == "" and err.count("\n") == 1 and f"backfill {bid}" in err
    assert "is queued: wait for it to finish or cancel it first" in err
    code, out, _ = run(capsys, "backfill", "show", iid, bid, "--json")
    shown = orjson.loads(out)
    assert code == 0 and (shown["backfill_id"], shown["state"]) == (bid, "queued")
    assert shown == Backfills(r, bs).get(iid, bid)  # the API's fields, the store's values
    code, out, _ = run(capsys, "backfill", "cancel", iid, bid)
    assert (code, out) == (0, f"cancelled backfill {bid}\n")
    code, out, _ = run(capsys, "backfill", "start", iid, *the_range(), "--json")
    second = orjson.loads(out)
    assert code == 0 and second["state"] == "queued" and second["windows_total"] == DAYS
    code, out, _ = run(capsys, "backfill", "list", iid, "--json")
    listed = orjson.loads(out)["backfills"]
    assert [(b["backfill_id"], b["state"]) for b in listed] == [
        (second["backfill_id"], "queued"),
        (bid, "cancelled"),
    ]
    code, out, _ = run(capsys, "backfill", "list", iid)
    assert code == 0 and f"backfill {bid} of integration {iid}: cancelled" in out
    assert f"0/{DAYS} reports, 0 rows read, 0 chats counted" in out


def test_errors_are_one_line_and_exit_1(bs: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    tomorrow = (today() + timedelta(days=1)).isoformat()
    for argv, words in (
        (["backfill", "nosuchone0", *the_range()], "no integration 'nosuchone0'"),
        (["backfill", "show", "nosuchone0", "x"], "no integration"),
        (["backfill", "cancel", "nosuchone0", "x"], "no integration"),
    ):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, "") and err.count("\n") == 1 and words in err, argv
    with running() as fc:
        iid = new_integration(bs, fc).id
    code, _, err = run(capsys, "backfill", iid, "--from", days_ago(1), "--to", tomorrow)
    assert code == 1 and "to is in the future" in err
    code, _, err = run(capsys, "backfill", iid, "--from", "1/2/2026", "--to", days_ago(1))
    assert code == 1 and "from must be a UTC day as YYYY-MM-DD" in err


def test_reading_needs_no_encryption_key(
    bs: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    with running() as fc:
        iid = new_integration(bs, fc).id
    code, out, _ = run(capsys, "backfill", iid, *the_range(), "--json")
    bid = orjson.loads(out)["backfill_id"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENCRYPTION_KEY")
    assert run(capsys, "backfill", "list", iid, "--json")[0] == 0
    assert run(capsys, "backfill", "show", iid, bid, "--json")[0] == 0
    code, out, err = run(capsys, "backfill", "cancel", iid, bid)
    assert (code, out) == (2, "") and "ENCRYPTION_KEY: must be set" in err


def test_wait_prints_a_json_line_per_change_to_a_pipe_until_done(
    bs: Settings, fc: ExtractStandIn, capsys: pytest.CaptureFixture[str], r: redis.Redis
) -> None:
    iid = new_integration(bs, fc).id
    with in_process_worker(bs, iid) as worker:
        code, out, err = run(capsys, "backfill", iid, *the_range(), "--wait")
    assert (code, err) == (0, ""), err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert set(lines[0]) == {
        "backfill_id", "state", "windows_done", "windows_total", "rows_read", "rows_skipped",
        "chats_counted", "eta_seconds", "error",
    }  # fmt: skip
    assert (lines[0]["state"], lines[0]["windows_done"]) == ("queued", 0)
    last = lines[-1]
    assert (last["state"], last["windows_done"], last["windows_total"]) == ("done", DAYS, DAYS)
    assert last["rows_read"] == last["chats_counted"] == len(fc.script.rows)
    assert last == {k: worker[k] for k in last}
    # Each line is a change; the progress only grows, and every report was seen arriving.
    moved = [tuple(v for k, v in line.items() if k != "eta_seconds") for line in lines]
    assert len(set(moved)) == len(moved)
    done = [line["windows_done"] for line in lines]
    assert done == sorted(done) and set(done) == set(range(DAYS + 1))
    assert any(line["state"] == "running" and line["eta_seconds"] is not None for line in lines)


def test_wait_exits_1_when_the_backfill_fails_or_is_cancelled(
    bs: Settings, fc: ExtractStandIn, capsys: pytest.CaptureFixture[str], r: redis.Redis
) -> None:
    iid = new_integration(bs, fc).id
    fc.force("submit", 401)
    with in_process_worker(bs, iid):
        code, out, err = run(capsys, "backfill", iid, *the_range(), "--wait", "--json")
    assert code == 1 and orjson.loads(out.splitlines()[-1])["state"] == "failed"
    assert err.count("\n") == 1 and "failed: Freshchat rejected the API key" in err
    # Cancelled while it waits for a worker (none runs here): exit 1, said on stderr.
    store = Backfills(r, bs)

    def cancel_when_started() -> None:
        wait_until(lambda: any(b["state"] == "queued" for b in store.list(iid)), 10, "a start")
        store.cancel(iid, store.list(iid)[0]["backfill_id"])

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    code, out, err = run(capsys, "backfill", iid, *the_range(), "--wait")
    canceller.join(10)
    bid = store.list(iid)[0]["backfill_id"]
    assert code == 1 and err == f"injixo-freshchat: backfill {bid} was cancelled\n"
    assert orjson.loads(out.splitlines()[-1])["state"] == "cancelled"


def test_wait_on_a_terminal_shows_a_live_progress_bar(
    bs: Settings, fc: ExtractStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    iid = new_integration(bs, fc).id
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", encoding="utf-8", buffering=1)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.delenv("NO_COLOR", raising=False)
    captured, sys.stdout = sys.stdout, terminal
    try:
        with in_process_worker(bs, iid):
            code = main(["backfill", iid, *the_range(), "--wait"])
        terminal.flush()
    finally:
        sys.stdout = captured
        terminal.close()
        reader.join(10)
        os.close(master)
    text = ANSI.sub("", seen.decode("utf-8", errors="replace"))
    assert code == 0, text
    assert "started backfill" in text and "━" in text  # rich's bar, redrawn in place
    assert "\r" in text or "\x1b[" in seen.decode(errors="replace")
    assert f"done: {DAYS}/{DAYS} reports" in text
    assert "{" not in text  # no JSON lines on a terminal
    for n in range(DAYS + 1):  # the bar moved through every report, not only to the end
        assert f"{n}/{DAYS} reports" in text, n


def spawn_cli(bs: Settings, *argv: str) -> subprocess.Popen[bytes]:
    """`python -m app.cli ...` with its stdout and stderr on pipes."""
    env = {**os.environ, **env_for(bs), **ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A run started in the background (nohup, `&`) inherits SIGINT ignored, and Python
        # then keeps ignoring it: give the command the terminal's default, as a user has.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_watching_and_leaves_the_backfill_running(
    bs: Settings, fc: ExtractStandIn, r: redis.Redis
) -> None:
    iid = new_integration(bs, fc).id
    cli = spawn_cli(bs, "backfill", iid, *the_range(), "--wait")
    try:
        assert cli.stdout is not None
        first = orjson.loads(cli.stdout.readline())  # a pipe: JSON lines, flushed each
        assert first["state"] == "queued"
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=20)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()  # closes its pipes
    bid = first["backfill_id"]
    assert cli.returncode == 130
    assert f"stopped watching; backfill {bid} goes on (queued)" in err.decode()
    assert f"backfill show {iid} {bid} --wait" in err.decode()
    assert Backfills(r, bs).get(iid, bid)["state"] == "queued"  # not cancelled


@pytest.mark.slow
def test_wait_follows_a_real_worker_to_the_end(
    bs: Settings, fc: ExtractStandIn, r: redis.Redis
) -> None:
    iid = new_integration(bs, fc).id
    with stack(bs, ENV) as s:
        s.worker()
        cli = spawn_cli(bs, "backfill", iid, *the_range(), "--wait")
        try:
            out, err = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
    assert cli.returncode == 0, err.decode()
    lines = [orjson.loads(line) for line in out.decode().splitlines()]
    assert lines[0]["state"] == "queued" and lines[-1]["state"] == "done"
    assert lines[-1]["chats_counted"] == len(fc.script.rows)
    assert [line["windows_done"] for line in lines] == sorted(
        line["windows_done"] for line in lines
    )
    assert len(fc.of("submit")) == DAYS  # one report per day, each asked for once
