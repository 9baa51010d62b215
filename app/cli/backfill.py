"""`backfill`: import an integration's history from Freshchat's Extract API (§13).

`backfill ID --from D --to D [--wait]` (as §13 writes it; `backfill start ...` is the same),
`backfill list ID`, `backfill show ID BID [--wait]`, `backfill cancel ID BID`. With `--wait`
the command follows the backfill to its end: a live progress bar on a terminal, otherwise
(or with --json) one JSON line per change. It exits 0 when the backfill is done, 1 when it
failed or was cancelled; Ctrl-C stops the watching, never the backfill.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from app.backfill_schemas import backfill_out
from app.backfills import CANCELLED, DONE, TERMINAL, Backfills
from app.cli.common import PROG, Subparsers, command, emit, json_flag, out
from app.redis_client import data_client
from app.settings import Settings

POLL_SECONDS = 1.0  # how often --wait reads the progress (tests make it shorter)
LINE_FIELDS = (
    "backfill_id", "state", "windows_done", "windows_total", "rows_read", "rows_skipped",
    "chats_counted", "eta_seconds", "error",
)  # fmt: skip


class _AnyWord(Mapping[str, argparse.ArgumentParser]):
    """The actions' parsers, where any word that is not an option passes as a choice."""

    def __init__(self, parsers: dict[str, argparse.ArgumentParser]) -> None:
        self.parsers = parsers

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        return self.parsers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parsers)

    def __len__(self) -> int:
        return len(self.parsers)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and not word.startswith("-")


class _StartByDefault(Subparsers):
    """§13's `backfill ID --from D --to D`: a first word naming no action means `start`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse checks the first word against `choices` (only `in` and iteration) before
        # calling the action; the parsers themselves stay in `_name_parser_map`.
        self.choices = _AnyWord(self._name_parser_map)  # type: ignore[assignment]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        words = list(values or [])
        # Integration ids (10 characters of a-z and 2-7) never spell an action's name.
        if words and words[0] not in self._name_parser_map:
            words.insert(0, "start")
        super().__call__(parser, namespace, words, option_string)


@contextmanager
def _store(settings: Settings) -> Iterator[Backfills]:
    """The backfill store on a short-lived synchronous Redis connection (RQ's kind)."""
    redis = data_client(settings, socket_connect_timeout=5, socket_timeout=10)
    try:
        yield Backfills(redis, settings)
    finally:
        redis.close()


def _public(record: dict[str, Any]) -> Any:
    """A record with the API's fields."""
    return out(backfill_out(record))


def _eta(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 5:
        return "a few seconds left"
    return f"about {seconds} s left" if seconds < 120 else f"about {round(seconds / 60)} min left"


def _progress_text(b: dict[str, Any]) -> str:
    read = f"{b['rows_read']:,} rows read"
    if b["rows_skipped"]:
        read += f" ({b['rows_skipped']:,} skipped)"
    parts = [
        f"{b['windows_done']}/{b['windows_total']} reports",
        read,
        f"{b['chats_counted']:,} chats counted",
    ]
    if b["state"] not in TERMINAL and b["eta_seconds"] is not None:
        parts.append(_eta(b["eta_seconds"]))
    return ", ".join(parts)


def _describe(b: dict[str, Any]) -> str:
    lines = [
        f"backfill {b['backfill_id']} of integration {b['integration_id']}: {b['state']}",
        f"  UTC days {b['from']}..{b['to']}: {_progress_text(b)}",
    ]
    if b["error"]:
        lines.append(f"  error: {b['error']}")
    return "\n".join(lines)


def _started(b: dict[str, Any]) -> str:
    return (
        f"started backfill {b['backfill_id']} of integration {b['integration_id']} "
        f"(UTC days {b['from']}..{b['to']}, {b['windows_total']} reports): {b['state']}"
    )


class _Lines:
    """One JSON line per change of the progress (not of the estimate alone)."""

    def __init__(self) -> None:
        self.last: tuple[Any, ...] | None = None

    def show(self, b: dict[str, Any]) -> None:
        """Print the progress if it moved."""
        seen = tuple(b[k] for k in LINE_FIELDS if k != "eta_seconds")
        if seen != self.last:
            self.last = seen
            line = {k: b[k] for k in LINE_FIELDS}
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
            sys.stdout.flush()  # a pipe is block-buffered: the reader sees each change now

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Bar:
    """A live progress bar (rich) on the terminal: one step per report imported."""

    def __init__(self, b: dict[str, Any]) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(file=sys.stdout),
        )
        self.task: TaskID = self.progress.add_task(
            f"{b['from']}..{b['to']}", total=max(1, b["windows_total"]), detail=""
        )

    def show(self, b: dict[str, Any]) -> None:
        """Move the bar to the record's progress."""
        state = "waiting for a worker" if b["state"] == "queued" else b["state"]
        self.progress.update(
            self.task,
            completed=b["windows_done"],
            total=max(1, b["windows_total"]),
            detail=f"{state}: {_progress_text(b)}",
        )

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()


def _wait(args: argparse.Namespace, store: Backfills, record: dict[str, Any]) -> int:
    """Follow the backfill to its end; 0 when done, 1 when failed or cancelled."""
    iid, bid = record["integration_id"], record["backfill_id"]
    lines = args.json or not sys.stdout.isatty()
    try:
        with _Lines() if lines else _Bar(record) as watch:
            watch.show(record)
            while record["state"] not in TERMINAL:
                time.sleep(POLL_SECONDS)
                record = store.get(iid, bid)
                watch.show(record)
    except KeyboardInterrupt:
        sys.stderr.write(
            f"{PROG}: stopped watching; backfill {bid} goes on ({record['state']}). "
            f"Watch it again: {PROG} backfill show {iid} {bid} --wait; "
            f"stop it: {PROG} backfill cancel {iid} {bid}\n"
        )
        return 130
    if record["state"] == DONE:
        if not lines:
            sys.stdout.write(f"done: {_progress_text(record)}\n")
        return 0
    if record["state"] == CANCELLED:
        sys.stderr.write(f"{PROG}: backfill {bid} was cancelled\n")
    else:
        sys.stderr.write(f"{PROG}: backfill {bid} failed: {record['error'] or 'no reason given'}\n")
    return 1


def cmd_backfill_start(args: argparse.Namespace, settings: Settings) -> int:
    """Start a backfill; with --wait, follow it to its end."""
    with _store(settings) as store:
        record = store.create(args.id, {"from": args.from_, "to": args.to})
        if not args.wait:
            emit(args, _public(record), _started(record))
            return 0
        if not args.json and sys.stdout.isatty():
            sys.stdout.write(_started(record) + "\n")
        return _wait(args, store, record)


def cmd_backfill_list(args: argparse.Namespace, settings: Settings) -> int:
    """The integration's backfills, newest first."""
    with _store(settings) as store:
        listed = store.list(args.id)
    text = "\n".join(_describe(b) for b in listed) or f"no backfills of {args.id} yet"
    emit(args, {"backfills": [_public(b) for b in listed]}, text)
    return 0


def cmd_backfill_show(args: argparse.Namespace, settings: Settings) -> int:
    """One backfill's progress; with --wait, follow it to its end."""
    with _store(settings) as store:
        record = store.get(args.id, args.backfill_id)
        if args.wait:
            return _wait(args, store, record)
    emit(args, _public(record), _describe(record))
    return 0


def cmd_backfill_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a queued or running backfill."""
    with _store(settings) as store:
        record = store.cancel(args.id, args.backfill_id)
    text = (
        f"cancelled backfill {record['backfill_id']}"
        if record["state"] == CANCELLED
        else f"cancelling backfill {record['backfill_id']}: it stops at its next step"
    )
    emit(args, _public(record), text)
    return 0


def _wait_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow it to its end: a progress bar on a terminal, else one JSON line per "
        "change; exit 0 when done, 1 when failed or cancelled (Ctrl-C stops watching only)",
    )


def register(sub: Subparsers) -> None:
    """Add `backfill`."""
    bf = sub.add_parser(
        "backfill",
        help="import an integration's history from Freshchat (solved chats of past days)",
        description="Import past solved chats from Freshchat's Extract API, so injixo can "
        "forecast from day one. `backfill ID --from D --to D` starts one (`start` may be "
        "omitted).",
        usage=f"{PROG} backfill [start] ID --from D --to D [--wait] [--json]\n"
        f"       {PROG} backfill list ID [--json]\n"
        f"       {PROG} backfill show|cancel ID BACKFILL_ID [--json]",
    )
    bsub = bf.add_subparsers(dest="action", required=True, metavar="ACTION", action=_StartByDefault)
    start = command(
        bsub,
        "start",
        "start importing UTC days FROM..TO (inclusive; one at a time per integration)",
        cmd_backfill_start,
    )
    start.add_argument("id", help="integration id")
    start.add_argument(
        "--from", dest="from_", required=True, metavar="D", help="first UTC day, YYYY-MM-DD"
    )
    start.add_argument(
        "--to", required=True, metavar="D", help="last UTC day, YYYY-MM-DD (not in the future)"
    )
    _wait_flag(start)
    json_flag(start)
    listing = command(
        bsub, "list", "the integration's backfills, newest first", cmd_backfill_list, True
    )
    listing.add_argument("id", help="integration id")
    json_flag(listing)
    show = command(bsub, "show", "one backfill's progress", cmd_backfill_show, True)
    show.add_argument("id", help="integration id")
    show.add_argument("backfill_id", help="backfill id")
    _wait_flag(show)
    json_flag(show)
    cancel = command(bsub, "cancel", "stop a queued or running backfill", cmd_backfill_cancel)
    cancel.add_argument("id", help="integration id")
    cancel.add_argument("backfill_id", help="backfill id")
    json_flag(cancel)
