"""The Backfiller: imports a backfill's solved chats from Freshchat's Extract API (§13).

Work goes window by window (`BACKFILL_WINDOW_DAYS` UTC days): submit a report, poll it
until COMPLETED, then download each link and append its rows, 1000 per MULTI, to the
integration's shard stream exactly as the ingest script appends live events (stream entry,
pending count, drain flag and drain job), so imported chats are counted by the same apply
script: a chat imported and seen live is one contact at its earliest terminal time, and
importing the same chats again changes nothing.

One RQ job runs steps for at most the drain time budget and never sleeps through a wait
(polls, Retry-After, the submission spacing): it records when to go on (`next_at`) and
ends, and the workers' janitor (`app.backfills.schedule_backfills`) enqueues the next job when it is
due, so drains keep running between the steps of a long import. A job holds the
backfill's lease (renewed by a thread while it works); every write checks it, so a
worker killed mid-import is replaced, after the lease runs out, by the next job, which
resumes at the first unfinished link of the first unfinished window (a link's partial
progress, `l_*`, is redone; its rows are appended again, which changes no count).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from typing import Any

import httpx
from redis import Redis
from redis.client import Pipeline

from app import extract
from app.backfills import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    TERMINAL,
    BackfillKeys,
    Backfills,
    window_times,
    windows,
)
from app.errors import AppError, NotFound
from app.extract import Link, Outcome
from app.extract_rows import ExtractFormatError, RowReader
from app.integrations import decrypt_secret
from app.jobs import enqueue_backfill, rq_for
from app.leases import Lease, LeaseLost
from app.lua import CHAT_EPOCH_MS
from app.settings import Settings
from workers.backfill_progress import Progress
from workers.serving import Served

log = logging.getLogger("injixo.backfill")

CHUNK = 1000  # rows per MULTI: bounded memory, few round trips
FAILED_TIMES = 3  # a window whose report FAILED this often fails the backfill
EXPIRED_REPOLLS = 3  # fresh links at once this often, then with backoff
POLL_FIRST_S = 1.0
POLL_MAX_S = 30.0
BACKOFF_MAX_S = 300.0
MIN_WAIT_S = 0.2  # even `Retry-After: 0` must not become a busy loop
REJECTED = (
    "Freshchat rejected the API key: copy the key of a user with the Account "
    "Administrator role (Freshchat > Settings > API Tokens)"
)


class Stop(Exception):
    """The backfill ends here, in `state`, with `error`."""

    def __init__(self, state: str, error: str = "") -> None:
        super().__init__(error)
        self.state, self.error = state, error


@dataclass
class Run:
    """What one job knows about the backfill it works on."""

    bid: str
    progress: Progress
    domain: str = ""
    api_key: str = field(default="", repr=False)
    windows: list[tuple[date, date]] = field(default_factory=list)

    @property
    def iid(self) -> str:
        """The integration's id."""
        return self.progress.integration_id

    @property
    def record(self) -> dict[str, str]:
        """The record as last read or written."""
        return self.progress.record

    def window(self) -> tuple[date, date]:
        """The first unfinished window."""
        return self.windows[self.progress.number("windows_done")]

    def label(self) -> str:
        """The current window, for messages: `2026-11-02..2026-11-08`."""
        first, last = self.window()
        return f"{first.isoformat()}..{last.isoformat()}"


def _batches(rows: Iterable[Any], size: int) -> Iterator[tuple[Any, ...]]:
    """Tuples of `size` items (the last may be shorter): `itertools.batched` of 3.12."""
    it = iter(rows)
    while batch := tuple(islice(it, size)):
        yield batch


def _client() -> httpx.Client:
    return httpx.Client(timeout=extract.API_TIMEOUT, follow_redirects=False)


@dataclass
class Backfiller:
    """Runs backfills with the Redis, HTTP client, clock and sleep it is given."""

    settings: Settings
    redis: Redis  # the data: records, streams, counts
    rq: Redis  # RQ's Redis, where its next jobs and drains are enqueued (may be `redis`)
    client: httpx.Client = field(default_factory=_client)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    poll_first_s: float = POLL_FIRST_S
    poll_max_s: float = POLL_MAX_S

    def __post_init__(self) -> None:
        self.store = Backfills(self.redis, self.settings, self.clock, self.rq)
        self.keys = BackfillKeys(self.settings.key_prefix)

    @classmethod
    def build(cls, settings: Settings, redis: Redis, rq: Redis | None = None) -> Backfiller:
        """The worker's wiring: data on `redis`, jobs on `rq` (None: `app.jobs.rq_for`)."""
        # httpx logs every request's full URL at INFO: a signed link's query is a secret.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        return cls(settings, redis, rq if rq is not None else rq_for(redis, settings))

    def close(self) -> None:
        """Close the HTTP client (the Redis connection is the caller's)."""
        self.client.close()

    def run(
        self, integration_id: str, backfill_id: str, wait_inline: bool = False
    ) -> dict[str, Any]:
        """Work on the backfill: for one time budget (then hand over to the next job), or
        with `wait_inline` until it ends (sleeping through waits: tests, bench, CLI)."""
        try:
            shard = self.store.integration(integration_id).shard
        except NotFound:
            return {"backfill_id": backfill_id, "note": "the integration no longer exists"}
        lease = Lease(self.redis, self.keys.lease(shard, integration_id), self.store.lease_ms)
        if not lease.acquire():
            return self._note(integration_id, backfill_id, "another job works on this backfill")
        self.redis.delete(self.keys.scheduling(shard, integration_id))  # the lease guards now
        lease.keep_alive()
        try:
            return self._run(integration_id, backfill_id, shard, lease, wait_inline)
        except LeaseLost:
            log.warning("backfill lease lost", extra={"backfill": backfill_id})
            return self._note(integration_id, backfill_id, "the lease ran out; another job goes on")
        except Exception:
            self._after_crash(lease, shard, integration_id, backfill_id)
            raise  # RQ shows the failed job; the janitor goes on after the backoff
        finally:
            lease.release()

    def _after_crash(self, lease: Lease, shard: int, iid: str, bid: str) -> None:
        """Back off before the next job (an error that repeats must not spin)."""
        try:
            record = self.store.raw(shard, iid, bid) or {}
            delay = min(BACKOFF_MAX_S, max(1.0, 2 * float(record.get("backoff") or 0)))
            at = f"{self.clock() + delay:.3f}"
            key = self.keys.record(shard, iid, bid)

            def fill(pipe: Pipeline) -> None:
                pipe.hset(key, mapping={"next_at": at, "backoff": f"{delay:g}", "job": ""})

            lease.write(fill)
        except Exception:  # Redis is what failed: its lease runs out, the janitor goes on
            log.warning("could not record the backoff", extra={"backfill": bid}, exc_info=True)

    def _run(
        self, iid: str, bid: str, shard: int, lease: Lease, wait_inline: bool
    ) -> dict[str, Any]:
        record = self.store.raw(shard, iid, bid)
        if record is None or record.get("state") in TERMINAL:
            return self._note(iid, bid, "nothing to do")
        due = float(record.get("next_at") or 0) - self.clock()
        if due > 0 and not wait_inline and not record.get("cancel"):
            return self._note(iid, bid, "not due yet")  # a second job, too early
        key = self.keys.record(shard, iid, bid)
        progress = Progress(self.redis, self.rq, self.settings, lease, key, iid, shard, record)
        run = Run(bid, progress)
        began = time.monotonic()
        try:
            self._start(run)
            if due > 0:
                self._pause(run, due)
            while True:
                if self.redis.hget(key, "cancel"):
                    raise Stop(CANCELLED)
                wait = self._step(run)
                if wait is None:
                    raise Stop(DONE)
                if wait > 0 and wait_inline:
                    self._pause(run, wait)
                elif wait > 0:
                    run.progress.set(next_at=f"{self.clock() + wait:.3f}", job="")
                    break
                elif not wait_inline and time.monotonic() - began > self._budget():
                    job = enqueue_backfill(self.rq, self.settings, iid, bid)
                    run.progress.set(next_at="0", job=job)
                    break
        except Stop as stop:
            self.store.finish(lease, shard, iid, bid, stop.state, stop.error)
            log.info("backfill ended", extra={"backfill": bid, "state": stop.state})
        return self.store.get(iid, bid)

    def _note(self, iid: str, bid: str, note: str) -> dict[str, Any]:
        """The record's view with a note on what this job did (or why it did nothing)."""
        try:
            return {**self.store.get(iid, bid), "note": note}
        except NotFound:
            return {"backfill_id": bid, "note": note}

    def _budget(self) -> float:
        return self.settings.drain_time_budget_seconds

    def _start(self, run: Run) -> None:
        """Load what the steps need; mark the backfill running."""
        integration = self.store.integration(run.iid)
        if not integration.active:
            raise Stop(CANCELLED, "the integration was deleted")
        try:
            run.api_key = decrypt_secret(self.settings, integration.freshchat_api_key_enc)
        except AppError as exc:
            raise Stop(FAILED, exc.message) from None
        run.domain = integration.freshchat_domain
        first, last = (date.fromisoformat(run.record[k]) for k in ("from", "to"))
        days = run.progress.number("window_days") or self.settings.backfill_window_days
        run.windows = windows(first, last, days)
        if run.record.get("state") == QUEUED:
            run.progress.set(state=RUNNING, started_at=f"{self.clock():.3f}")

    def _pause(self, run: Run, seconds: float) -> None:
        """Sleep (renewing nothing: the lease thread does), waking for a cancel."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            if self.redis.hget(run.progress.key, "cancel"):
                return
            self.sleep(min(left, 0.5))

    # --- steps: each returns the seconds to wait before the next (0: go on), None: done

    def _step(self, run: Run) -> float | None:
        if run.progress.number("windows_done") >= len(run.windows):
            return None
        report = run.record.get("report")
        if not report:
            return self._submit(run)
        answer = extract.poll(self.client, run.domain, run.api_key, report)
        if answer.kind is extract.Kind.NOT_FOUND:  # Freshchat forgot it: ask again
            log.info("report unknown to Freshchat, asking again", extra={"backfill": run.bid})
            run.progress.restart_window()
            return 0.0
        if not answer.ok:
            return self._trouble(run, answer, "report status")
        self._calm(run)
        statuses = {answer.report_status, *(link.status for link in answer.links)}
        if "FAILED" in statuses:
            return self._window_failed(run)
        if answer.report_status != "COMPLETED" or statuses - {"COMPLETED", ""}:
            polls = run.progress.number("polls") + 1
            run.progress.set(polls=str(polls))
            return float(min(self.poll_max_s, self.poll_first_s * 2 ** (polls - 1)))
        done = set(run.progress.links_done())
        todo = [link for link in answer.links if link.identity not in done]
        if not todo:
            log.info("window imported", extra={"backfill": run.bid, "window": run.label()})
            run.progress.window_done()
            return 0.0
        return self._import(run, todo[0])

    def _submit(self, run: Run) -> float:
        spacing = self.settings.backfill_submit_every_seconds
        if spacing > 0:
            key = self.keys.submitted(run.progress.shard, run.iid)
            if not self.redis.set(key, "1", nx=True, px=max(1, int(spacing * 1000))):
                return max(MIN_WAIT_S, int(self.redis.pttl(key)) / 1000)
        start, end = window_times(run.window())
        answer = extract.submit(self.client, run.domain, run.api_key, start, end)
        if not answer.ok:
            return self._trouble(run, answer, "report request")
        self._calm(run)
        run.progress.set(report=answer.report_id, polls="0")
        log.info("report submitted", extra={"backfill": run.bid, "window": run.label()})
        return self.poll_first_s

    def _trouble(self, run: Run, answer: Outcome, what: str) -> float:
        """A failed API call: wait and retry, or stop with the reason."""
        if answer.kind is extract.Kind.REJECTED:
            raise Stop(FAILED, REJECTED)
        if answer.kind is not extract.Kind.RETRY:
            raise Stop(FAILED, f"Freshchat refused the {what} for {run.label()}: {answer.detail}")
        if answer.retry_after is not None:
            wait = answer.retry_after
        else:
            wait = min(BACKOFF_MAX_S, max(1.0, 2 * float(run.record.get("backoff") or 0)))
            run.progress.set(backoff=f"{wait:g}")
        log.info(
            "freshchat busy, retrying",
            extra={"backfill": run.bid, "call": what, "why": answer.detail, "wait_s": wait},
        )
        return max(MIN_WAIT_S, wait)

    def _calm(self, run: Run) -> None:
        """A call succeeded: the next failure backs off from the start again."""
        if run.record.get("backoff", "0") != "0":
            run.progress.set(backoff="0")

    def _window_failed(self, run: Run) -> float:
        fails = run.progress.number("fails") + 1
        if fails >= FAILED_TIMES:
            raise Stop(FAILED, f"Freshchat failed the report for {run.label()} {fails} times")
        log.info("report failed, asking again", extra={"backfill": run.bid, "fails": fails})
        run.progress.restart_window(fails=str(fails))
        return 0.0

    def _import(self, run: Run, link: Link) -> float:
        """Download one link and append its rows; 0 when done (or fresh links are due)."""
        with tempfile.TemporaryFile(prefix="injixo-backfill-") as tmp:
            got = extract.download(
                self.client, link.href, tmp, self.settings.freshchat_allow_insecure
            )
            if got.kind is extract.Kind.EXPIRED:
                expired = run.progress.number("expired") + 1
                run.progress.set(expired=str(expired))
                log.info("download link expired", extra={"backfill": run.bid, "link": link.safe})
                if expired > EXPIRED_REPOLLS:
                    return self._trouble(run, Outcome(extract.Kind.RETRY, got.status), "download")
                return 0.0
            if not got.ok:
                return self._trouble(run, got, "download")
            log.info(
                "downloaded", extra={"backfill": run.bid, "link": link.safe, "bytes": got.size}
            )
            run.progress.start_link()
            latest = int(self.clock() * 1000) + self.settings.future_tolerance_seconds * 1000
            reader = RowReader(tmp, latest_ms=latest, earliest_ms=CHAT_EPOCH_MS)
            try:
                for rows in _batches(reader, CHUNK):
                    run.progress.append(rows, reader)
                run.progress.append((), reader)  # malformed rows after the last good one
            except ExtractFormatError as exc:
                raise Stop(FAILED, f"a download for {run.label()} cannot be read: {exc}") from None
        run.progress.link_done(link.identity)
        return 0.0


# --- RQ job shim (enqueued by dotted path from app.jobs) ------------------------------------

_SERVED: Served[Backfiller] = Served(
    "backfiller",
    "backfill jobs run in `injixo-freshchat worker`, which hands them their Backfiller",
)


def serving(backfiller: Backfiller) -> AbstractContextManager[Backfiller]:
    """Run RQ jobs in this block with `backfiller` (the worker runner wraps its work loop)."""
    return _SERVED.serving(backfiller)


def run_backfill(integration_id: str, backfill_id: str) -> dict[str, Any]:
    """RQ job: the next steps of one backfill."""
    return _SERVED.get().run(integration_id, backfill_id)
