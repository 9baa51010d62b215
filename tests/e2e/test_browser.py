"""The admin page in real headless Chromium (Debian's, driven by Playwright; no download).

One walk through the article: sign in → empty list with the Freshworks tile → Select
model → Freshchat → Add integration → each inline error → Save integration → generate
and copy the injixo API key (a reload adds none) → events posted with it are counted and
shown for their day (table with 08:00-08:15 intervals, chart, CSV download) → the key is
revoked in the page and stops working → a new key, the app's install and a chat sent with
it, found in the deliveries log and explained → edit → delete. And one walk as an
operator: the RQ dashboard through the page's link, a failed event requeued there, and a
page of another origin refused when it tries to empty the failed jobs.

Every step leaves a screenshot in `$BROWSER_SHOTS/<test>/` (or the test's tmp_path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from playwright.sync_api import Browser, Page, Response, expect
from rq import Queue
from rq.registry import FailedJobRegistry

from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.e2e.browser_support import Shots, chromium, shots_in
from tests.freshchat_standin import running
from tests.redis_server import free_port
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    ROOT,
    WEBHOOK_FIXTURES,
    at,
    conv_event,
    env_for,
    post_events,
    sign,
    wait_until,
    webhook_event,
)

pytestmark = pytest.mark.e2e

GOOD_KEY = "good-key"
DASH = "\u2013"
# A recent past day, so retention windows never expire the test's counts.
DAY = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Shots:
    """Screenshots in `$BROWSER_SHOTS/<test name>/` when set, else in the test's tmp_path."""
    return shots_in(request.node.name, tmp_path)


class _AttackerHandler(BaseHTTPRequestHandler):
    """A page of another origin (another port of this host: same-site, so even SameSite=Strict
    cookies go along) that tries to change the RQ dashboard's state."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def attacker() -> Iterator[tuple[str, type[_AttackerHandler]]]:
    """The other origin's server; yields its base URL and handler (set `page` on it)."""
    handler = type("Attacker", (_AttackerHandler,), {"page": b""})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def standin() -> Iterator[str]:
    """The documented stand-in Freshchat (§5: the paginated group list only) on loopback;
    yields its `127.0.0.1:PORT`."""
    with running() as server:
        server.script.valid_keys = {GOOD_KEY}
        server.script.groups = {"g1": "Customer Support"}
        yield server.domain.removeprefix("http://")


@dataclass
class Web:
    """The real web process."""

    base: str
    env: dict[str, str]


def _env(settings: Settings, port: int) -> dict[str, str]:
    env = {**os.environ, **env_for(settings)}
    env["PORT"] = str(port)
    env["FRESHCHAT_ALLOW_INSECURE"] = "true"
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def web(settings: Settings, tmp_path: Path) -> Iterator[Web]:
    """`python -m app.cli web` on a free port, against the session's Redis."""
    port = free_port()
    env = _env(settings, port)
    log = (tmp_path / "web.log").open("wb")
    cmd = [sys.executable, "-m", "app.cli", "web", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("web did not start:\n" + (tmp_path / "web.log").read_text())
            time.sleep(0.1)
        yield Web(base, env)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; Playwright never downloads a browser here."""
    with chromium() as launched:
        yield launched


def run_worker_burst(web: Web) -> None:
    """`python -m app.cli worker --burst`: count everything pending, then exit."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--burst"],
        cwd=ROOT,
        env=web.env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def field_error(page: Page, field: str) -> str:
    """The inline error next to a form field, which the field names in aria-describedby."""
    described = page.locator(f"#{field}").get_attribute("aria-describedby") or ""
    assert f"{field}-error" in described.split()
    expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
    return page.locator(f"#{field}-error").inner_text()


def fill_form(page: Page, name: str, domain: str, key: str, save: str = "Save integration") -> None:
    """Fill the three fields and click the form's save button."""
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Freshchat domain").fill(domain)
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name=save).click()


def table_rows(page: Page, selector: str) -> list[list[str]]:
    """Cell texts of a table body."""
    rows = page.locator(f"{selector} tbody tr")
    return [
        [cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


def events_for_the_day() -> list[dict[str, Any]]:
    """Four chats solved on DAY (one delivered twice), one still open."""
    support, billing = ("g1", "Customer Support"), ("g2", "Billing")
    chats = [str(uuid.uuid4()) for _ in range(5)]
    first = conv_event(chats[0], "resolved", at(f"{DAY}T08:01:00"), support)
    return [
        first,
        conv_event(chats[1], "resolved", at(f"{DAY}T08:05:00"), support),
        conv_event(chats[2], "resolved", at(f"{DAY}T08:20:00"), support),
        conv_event(chats[3], "resolved", at(f"{DAY}T08:10:00"), billing),
        conv_event(chats[4], "assigned", at(f"{DAY}T08:12:00"), support),
        first,
    ]


def show_counts(page: Page, day: str, interval: str, tz: str) -> None:
    """Choose the day, interval and zone of the Contacts section and click Show."""
    page.get_by_label("Day", exact=True).fill(day)
    page.get_by_label("Interval", exact=True).select_option(interval)
    page.get_by_label("Time zone").fill(tz)
    page.get_by_role("button", name="Show").click()


def expect_view(page: Page, day: str, interval: str, tz: str) -> None:
    """The Contacts form still shows this day, interval and zone."""
    expect(page.get_by_label("Day", exact=True)).to_have_value(day)
    expect(page.get_by_label("Interval", exact=True)).to_have_value(interval)
    expect(page.get_by_label("Time zone")).to_have_value(tz)


def test_article_flow_in_chromium(web: Web, browser: Browser, standin: str, shots: Shots) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web.base)
    page = context.new_page()
    page.set_default_timeout(15_000)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        api_key = _article(page, web, standin, shots)
        _counts(page, web, api_key, shots)
        _deliveries(page, web, shots)
        _webhook(page, web, shots)
        _edit_and_delete(page, web, shots)
    finally:
        context.close()
    # Every form answers 303 to a page that loads: no 4xx/5xx, no CSP violation, no
    # missing static file, no script error.
    assert console_errors == []


def _article(page: Page, web: Web, standin: str, shots: Shots) -> str:
    """Sign in, add an integration, generate its key, send events; returns the key."""
    # Sign in: every page sends us to the sign-in form first.
    page.goto(web.base + "/")
    signin = f"{web.base}/signin?next=%2Faccount%2Fintegrations"
    expect(page).to_have_url(signin)
    page.get_by_label("Admin token").fill("wrong-token-wrong-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#token-error")).to_contain_text("not the admin token")
    expect(page).to_have_url(signin)  # back on the form by GET: a reload posts nothing
    shots(page, "signin-error")
    page.reload()
    expect(page.locator("#token-error")).to_have_count(0)
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(web.base + "/account/integrations")

    # 1. Account > Integrations, empty: the Freshworks tile is there right away.
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs).to_contain_text("Account")
    expect(crumbs).to_contain_text("Integrations")
    expect(page.get_by_role("heading", name="Freshworks")).to_be_visible()
    expect(page.get_by_role("link", name="Select model")).to_be_visible()
    shots(page, "list-empty")

    # An integration exists (created through the admin API): the list and its button.
    existing = httpx.post(
        web.base + "/v1/integrations",
        headers=ADMIN,
        json={
            "name": "Existing",
            "freshchat_domain": "existing.freshchat.com",
            "freshchat_api_key": "unchecked",
            "verify": False,
        },
    )
    assert existing.status_code == 201, existing.text
    page.reload()
    expect(page.locator("#integrations")).to_contain_text("existing.freshchat.com")
    assert "shard" not in page.content().lower()
    # 2.-4. Add integration → Freshworks tile: Select model → Freshchat: Add integration.
    page.get_by_role("link", name="Add integration").click()
    page.get_by_role("link", name="Select model").click()
    freshchat = page.locator("section", has=page.get_by_role("heading", name="Freshchat"))
    freshchat.get_by_role("link", name="Add integration").click()
    expect(page.get_by_role("heading", name="Set up your Freshchat integration")).to_be_visible()
    expect(page.get_by_label("Freshchat domain")).to_have_attribute(
        "placeholder", "example.freshchat.com"
    )
    expect(page.get_by_role("group", name="Credentials")).to_be_visible()
    form_url = page.url

    # Each inline error, with the name and domain kept and the API key never echoed; the
    # form comes back by GET, and a reload shows it fresh.
    fill_form(page, "Acme Support", "not a domain", GOOD_KEY)
    assert "is not a Freshchat domain" in field_error(page, "freshchat_domain")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Acme Support")
    expect(page.get_by_label("Freshchat domain")).to_have_value("not a domain")
    expect(page.get_by_label("API key", exact=True)).to_have_value("")
    assert page.url == form_url
    page.reload()
    expect(page.locator("#form-errors")).to_have_count(0)

    fill_form(page, "existing", f"http://{standin}", GOOD_KEY)
    assert "already exists" in field_error(page, "name")

    fill_form(page, "Acme Support", f"http://{standin}", "wrong-key")
    assert "rejected the API key" in field_error(page, "freshchat_api_key")

    closed = free_port()
    fill_form(page, "Acme Support", f"http://127.0.0.1:{closed}", GOOD_KEY)
    assert "Could not reach Freshchat" in field_error(page, "freshchat_domain")
    shots(page, "add-form-errors")

    # 5. Save integration → the Connect Freshchat section (option 1: the injixo app).
    fill_form(page, "Acme Support", f"http://{standin}", GOOD_KEY)
    expect(page.get_by_role("heading", name="Connect Freshchat")).to_be_visible()
    iid = page.url.split("/account/integrations/")[1].split("?")[0].split("#")[0]
    expect(page.get_by_text("No injixo API key yet.")).to_be_visible()
    expect(page.get_by_text("The integration was saved.")).to_be_visible()
    shots(page, "saved")

    # Generate the injixo API key; it is shown once, with a working Copy button.
    page.get_by_role("button", name="Generate injixo API key").click()
    api_key = page.locator("#new-key").input_value()
    assert api_key.startswith("ijx_") and len(api_key) > 40
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == api_key
    shots(page, "key-generated")
    assert len(table_rows(page, "#keys")) == 1
    # Post/redirect/get: the page showing the key is a plain GET; a reload shows it no more
    # and generates no other key (and is no 405).
    assert page.url.split("#")[0] == f"{web.base}/account/integrations/{iid}"
    reloaded = page.reload()
    assert reloaded is not None and reloaded.status == 200
    expect(page.locator("#new-key")).to_have_count(0)
    assert api_key not in page.content()
    assert len(table_rows(page, "#keys")) == 1
    keys = httpx.get(f"{web.base}/v1/integrations/{iid}/api-keys", headers=ADMIN).json()
    assert len(keys["api_keys"]) == 1
    shots(page, "key-page-reloaded")

    # Events sent with the key are accepted and counted by a worker.
    with httpx.Client(base_url=web.base, timeout=15) as api:
        accepted = post_events(api, api_key, events_for_the_day())
        assert accepted.status_code == 202, accepted.text
        assert accepted.json() == {"accepted": 6, "ignored": 0}
        dst = [
            conv_event(
                str(uuid.uuid4()), "resolved", at(f"2026-10-25T{t}"), ("g1", "Customer Support")
            )
            for t in ("00:30:00", "01:30:00")
        ]
        assert post_events(api, api_key, dst).status_code == 202
    run_worker_burst(web)
    page.reload()
    assert api_key not in page.content()  # shown once only
    expect(page.locator("#last-event")).not_to_have_text("never")
    expect(page.locator("#health")).to_have_text("Receiving events")
    return api_key


def _counts(page: Page, web: Web, api_key: str, shots: Shots) -> None:
    """The day's counts in three views and as CSV; revoke the key with the view kept."""
    # The counts view for that day: the table shows exactly those numbers, intervals
    # written as a customer writes them.
    show_counts(page, DAY, "15", "")
    assert table_rows(page, "#counts-table") == [
        [f"08:00{DASH}08:15", "Billing", "1"],
        [f"08:00{DASH}08:15", "Customer Support", "2"],
        [f"08:15{DASH}08:30", "Customer Support", "1"],
    ]
    expect(page.locator("#counts-total")).to_have_text("4")
    expect(page.locator("#counts-chart > rect")).to_have_count(3)
    expect(page.locator(".legend")).to_contain_text("Customer Support")
    shots(page, "counts-15")

    show_counts(page, DAY, "60", "")
    assert table_rows(page, "#counts-table") == [
        [f"08:00{DASH}09:00", "Billing", "1"],
        [f"08:00{DASH}09:00", "Customer Support", "3"],
    ]
    # A day whose clock goes back: 25 local hours, the repeated 02:00 twice (§6), told
    # apart by the zone's abbreviation.
    show_counts(page, "2026-10-25", "60", "Europe/Berlin")
    assert table_rows(page, "#counts-table") == [
        [f"02:00{DASH}03:00 CEST", "Customer Support", "1"],
        [f"02:00{DASH}03:00 CET", "Customer Support", "1"],
    ]
    expect(page.locator("#counts-chart > rect")).to_have_count(2)
    shots(page, "counts-dst")

    show_counts(page, DAY, "60", "Asia/Kolkata")
    assert table_rows(page, "#counts-table") == [
        [f"13:00{DASH}14:00", "Billing", "1"],
        [f"13:00{DASH}14:00", "Customer Support", "3"],
    ]
    page.locator("#counts").scroll_into_view_if_needed()
    shots(page, "counts-kolkata")

    # The CSV download of what is shown, named for the integration and the day.
    with page.expect_download() as caught:
        page.get_by_role("link", name="Download CSV").click()
    download = caught.value
    assert download.suggested_filename == f"injixo-acme-support-{DAY}.csv"
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    assert text.splitlines() == [
        "interval,interval_start,queue,contacts",
        f"13:00{DASH}14:00,{DAY}T13:00:00+05:30,Billing,1",
        f"13:00{DASH}14:00,{DAY}T13:00:00+05:30,Customer Support,3",
    ]

    # The list shows the new integration with its status columns.
    page.goto(web.base + "/account/integrations")
    expect(page.locator("#integrations")).to_contain_text("Acme Support")
    shots(page, "list")

    # Revoke the key in the page (the day and zone stay chosen): ingestion with it fails.
    page.go_back()
    expect_view(page, DAY, "60", "Asia/Kolkata")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("was revoked")).to_be_visible()
    expect(page.locator("#keys")).to_contain_text("Revoked")
    expect(page.get_by_role("button", name="Revoke key")).to_have_count(0)
    expect_view(page, DAY, "60", "Asia/Kolkata")
    shots(page, "key-revoked")
    page.reload()
    expect(page.get_by_text("was revoked")).to_have_count(0)  # said once
    with httpx.Client(base_url=web.base, timeout=15) as api:
        rejected = post_events(api, api_key, events_for_the_day()[:1])
    assert rejected.status_code == 401
    # The refused request shows up in the integration's status (written off the request path).
    deadline = time.monotonic() + 10
    while True:
        page.reload()
        if page.locator("#auth-failures").inner_text() == "1" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    expect(page.locator("#auth-failures")).to_have_text("1")


def _deliveries(page: Page, web: Web, shots: Shots) -> None:
    """A new key; the app's install and a solved chat sent with it; the deliveries log, a
    search for the chat, and its explanation (in the zone the page shows)."""
    page.get_by_role("button", name="Generate injixo API key").click()
    api_key = page.locator("#new-key").input_value()
    expect_view(page, DAY, "60", "Asia/Kolkata")
    expect(page.locator("#app-installed")).to_have_count(0)
    chat = str(uuid.uuid4())
    with httpx.Client(base_url=web.base, timeout=15) as api:
        installed = post_events(api, api_key, {"event": "onAppInstall", "data": {}})
        assert installed.json() == {"accepted": 0, "ignored": 1}
        solved = conv_event(chat, "resolved", at(f"{DAY}T09:05:00"), ("g1", "Customer Support"))
        assert post_events(api, api_key, solved).json() == {"accepted": 1, "ignored": 0}
    run_worker_burst(web)
    page.reload()
    # The customer sees the connection work right where the app is installed.
    expect(page.locator("#install #app-installed")).to_contain_text("injixo app installed at")
    expect(page.locator("#health")).to_have_text("Receiving events")
    expect(page.locator("#pending")).to_have_text("0")
    page.locator("#install").scroll_into_view_if_needed()
    shots(page, "app-installed")

    # The deliveries log: newest first, the refused request of the revoked key included.
    page.get_by_role("link", name="Open the deliveries log").click()
    expect(page.get_by_role("heading", name="Deliveries", exact=True)).to_be_visible()
    log = page.locator("#deliveries")
    expect(log.locator("tbody.delivery").first).to_contain_text(chat)
    expect(log).to_contain_text("Refused: wrong or revoked injixo API key")
    expect(log).to_contain_text("0 accepted, 1 ignored")  # the app's install
    assert "shard" not in page.content().lower()
    shots(page, "deliveries-log")

    # Search one conversation id (a GET form: the URL can be shared and reloaded).
    page.get_by_label("Conversation id").fill(chat)
    page.get_by_role("button", name="Search").click()
    assert "conversation_id=" in page.url
    expect(log.locator("tbody.delivery")).to_have_count(1)
    expect(page.get_by_label("Conversation id")).to_have_value(chat)
    expect(log).to_contain_text("Customer Support")
    expect(log).to_contain_text("Solved")
    shots(page, "deliveries-search")

    # Click through to the chat's explanation: counted where, when and why.
    log.get_by_role("link", name=chat).click()
    expect(page.locator("h1")).to_contain_text(chat)
    expect(page.locator("#chat-counted")).to_have_text("Yes, as one contact")
    expect(page.locator("#chat-queue")).to_have_text("Customer Support")
    expect(page.locator("#chat-why")).to_contain_text("the event named the chat's Freshchat group")
    expect(page.locator("#chat-why-code")).to_have_text("group_name_in_event")
    expect(page.locator("#chat-interval")).to_have_text(f"{DAY} 14:30{DASH}14:45 Asia/Kolkata")
    expect(page.locator("#chat-deliveries tbody.delivery")).to_have_count(1)
    shots(page, "chat-explained")

    # Back to the integration, with its day and zone still chosen.
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    crumbs.get_by_role("link", name="Acme Support").click()
    expect_view(page, DAY, "60", "Asia/Kolkata")


def _webhook(page: Page, web: Web, shots: Shots) -> None:
    """Option 2: paste Freshchat's public key as copied (an error first), copy the URL, a
    signed resolution arrives and is counted once though the app sent the chat too."""
    section = page.locator("#install")
    expect(
        section.get_by_role("heading", name="Option 2: Freshchat's own webhooks")
    ).to_be_visible()
    page.get_by_label("Freshchat's public key").fill("-----BEGIN PUBLIC KEY-----nope")
    page.get_by_role("button", name="Save public key").click()
    expect(page.locator("#public_key-error")).to_contain_text("not a valid RSA public key")
    expect(page.get_by_label("Freshchat's public key")).to_have_value(
        "-----BEGIN PUBLIC KEY-----nope"
    )
    copied = (WEBHOOK_FIXTURES / "test_public_key_as_copied.txt").read_text()
    page.get_by_label("Freshchat's public key").fill(copied)
    page.get_by_role("button", name="Save public key").click()
    expect(page.locator("#webhook-saved")).to_have_text("Public key saved.")
    url = page.locator("#webhook-url").input_value()
    assert url.startswith(web.base + "/v1/freshchat/webhooks/")
    page.locator("#copy-webhook-url").click()
    expect(page.locator("#webhook-copy-status")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == url
    expect(page.locator("#webhook-hint")).to_contain_text("none yet")
    page.locator("#webhook").scroll_into_view_if_needed()
    shots(page, "webhook-set")
    # Freshchat resolves a new chat; a wrong signature changes nothing.
    chat = str(uuid.uuid4())
    body = orjson.dumps(webhook_event("conversation_resolution", chat, at(f"{DAY}T09:20:00"), "g1"))
    headers = {"Content-Type": "application/json", "X-Freshchat-Signature": sign(body)}
    assert httpx.post(url, content=body, headers=headers).status_code == 202
    bad = {**headers, "X-Freshchat-Signature": sign(body + b" ")}
    assert httpx.post(url, content=body, headers=bad).status_code == 401
    run_worker_burst(web)
    page.reload()
    expect(page.locator("#webhook-hint")).not_to_contain_text("none yet")
    page.get_by_role("link", name="Open the deliveries log").click()
    log = page.locator("#deliveries")
    expect(log.locator("tbody.delivery").first).to_contain_text("Freshchat webhook")
    expect(log.locator("tbody.delivery").first).to_contain_text("missing or wrong signature")
    expect(log).to_contain_text("Conversation resolved")
    shots(page, "webhook-deliveries")
    log.get_by_role("link", name=chat).first.click()
    expect(page.locator("#chat-counted")).to_have_text("Yes, as one contact")
    expect(page.locator("#chat-queue")).to_have_text("Customer Support")
    shots(page, "webhook-chat")
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    crumbs.get_by_role("link", name="Acme Support").click()
    expect_view(page, DAY, "60", "Asia/Kolkata")


def _edit_and_delete(page: Page, web: Web, shots: Shots) -> None:
    """Edit the integration (one error on the way), then delete it after confirming."""
    # Edit: the form shows the record (never its key); a key Freshchat rejects is an
    # inline error that keeps what was typed; then a good one is saved.
    page.get_by_role("link", name="Edit", exact=True).click()
    expect(page.get_by_role("heading", name="Edit Acme Support")).to_be_visible()
    assert "/edit?day=" in page.url
    expect(page.get_by_label("Name", exact=True)).to_have_value("Acme Support")
    expect(page.get_by_label("API key", exact=True)).to_have_value("")
    domain = page.get_by_label("Freshchat domain").input_value()
    fill_form(page, "Acme Chat", domain, "wrong-key", save="Save changes")
    assert "rejected the API key" in field_error(page, "freshchat_api_key")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Acme Chat")
    expect(page.get_by_label("API key", exact=True)).to_have_value("")
    shots(page, "edit-error")
    fill_form(page, "Acme Chat", domain, GOOD_KEY, save="Save changes")
    expect(page.locator("#notice")).to_have_text("The integration was updated.")
    expect(page.get_by_role("heading", name="Acme Chat", exact=True)).to_be_visible()
    expect_view(page, DAY, "60", "Asia/Kolkata")
    shots(page, "edited")
    page.reload()
    expect(page.locator("#notice")).to_have_count(0)

    # Delete: a confirmation page first (nothing happens on the way there), then the list.
    page.get_by_role("link", name="Delete integration").click()
    expect(page.get_by_role("heading", name="Delete Acme Chat?")).to_be_visible()
    listed = httpx.get(web.base + "/v1/integrations", headers=ADMIN).json()["integrations"]
    assert {i["name"]: i["status"] for i in listed}["Acme Chat"] == "active"
    shots(page, "delete-confirm")
    page.get_by_role("button", name="Delete integration").click()
    expect(page).to_have_url(web.base + "/account/integrations")
    expect(page.locator("#notice")).to_contain_text("Acme Chat was deleted")
    expect(page.locator("#integrations")).not_to_contain_text("Acme Chat")
    expect(page.locator("#integrations")).to_contain_text("Existing")
    shots(page, "deleted")
    page.reload()
    expect(page.locator("#notice")).to_have_count(0)
    listed = httpx.get(web.base + "/v1/integrations", headers=ADMIN).json()["integrations"]
    assert {i["name"]: i["status"] for i in listed}["Acme Chat"] == "deleted"


def test_operator_uses_the_rq_dashboard_in_chromium(
    web: Web,
    browser: Browser,
    settings: Settings,
    r: redis.Redis,
    attacker: tuple[str, type[_AttackerHandler]],
    shots: Shots,
) -> None:
    # A failed job: an event the apply script refuses is dead-lettered into a job that
    # fails (the way tests/test_operations.py makes one), by a real burst worker.
    stream = RedisKeys(settings.key_prefix).stream(3)
    r.xadd(stream, {"e": orjson.dumps(["acme000000", "chat", 9, 1, "", ""])})
    run_worker_burst(web)
    failed = FailedJobRegistry(settings.rq_queue, connection=r)
    [job_id] = failed.get_job_ids()
    queue = settings.rq_queue

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    assets: dict[str, int] = {}

    def record(response: Response) -> None:
        if response.url.split("?")[0].endswith((".css", ".js")):
            assets.setdefault(response.url, response.status)  # later loads may answer 304

    page.on("response", record)
    try:
        # A 401 carries a Basic challenge, which headless Chromium turns into a navigation
        # error: ask through the context's own client, which shares its cookie jar.
        assert context.request.get(web.base + "/rq/").status == 401
        page.goto(web.base + "/signin")
        page.get_by_label("Admin token").fill(ADMIN_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(web.base + "/account/integrations")

        # The page links the dashboard; the session cookie (SameSite=Strict, path /) goes
        # along; its styles and scripts load and its queues table fills.
        page.get_by_role("link", name="RQ dashboard").click()
        expect(page).to_have_url(web.base + "/rq/")
        expect(page).to_have_title("RQ dashboard")
        row = page.locator("#queues tbody tr[data-role=queue]", has_text=queue)
        expect(row).to_have_count(1)
        expect(row.locator("td.failed a").first).to_have_text("1")
        styled = "[...document.styleSheets].filter(s => s.cssRules.length > 0).length"
        assert page.evaluate(styled) >= 2  # bootstrap and main.css
        shots(page, "rq-queues")

        # Another origin's page tries to empty the failed jobs, with the operator's cookie
        # going along (same site): refused, nothing removed. Its image tries the "requeue
        # all" that rq-dashboard also answers on GET: refused too.
        other, handler = attacker
        handler.page = (
            f'<!doctype html><title>Win</title><img src="{web.base}/rq/requeue/{queue}">'
            f'<form method="post" action="{web.base}/rq/queue/{queue}/failed/empty">'
            "<button>Claim your prize</button></form>"
        ).encode()
        evil = context.new_page()
        # (Chromium hides an image's JSON answer from the page, Playwright included, so
        # what shows the refusal is the failed job still there.)
        with evil.expect_request(f"{web.base}/rq/requeue/{queue}"):
            evil.goto(other + "/")
        with evil.expect_response(f"{web.base}/rq/queue/{queue}/failed/empty") as emptied:
            evil.get_by_role("button", name="Claim your prize").click()
        assert emptied.value.status == 403
        assert emptied.value.json()["reason"] == "cross_site"
        shots(evil, "rq-cross-site-refused")
        evil.close()
        assert failed.get_job_ids() == [job_id]

        # The operator opens the failed jobs and requeues the event from the dashboard.
        row.locator("td.failed a").first.click()
        job = page.locator(f"#jobs tr[data-job-id='{job_id}']")
        expect(job).to_contain_text("PoisonEvent")
        shots(page, "rq-failed-job")
        job.locator("[data-role=requeue-job-btn]").click()
        expect(job).to_have_count(0)
        wait_until(lambda: Queue(queue, connection=r).job_ids == [job_id], 10, "the requeue")
        assert failed.get_job_ids() == []
        shots(page, "rq-requeued")
        assert assets and all(status == 200 for status in assets.values()), assets
        assert any(url.endswith("main.css") for url in assets), assets
        assert any("jquery" in url for url in assets), assets

        # Signing out of the page ends the dashboard's session too.
        page.goto(web.base + "/account/integrations")
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(web.base + "/signin")
        assert context.request.get(web.base + "/rq/").status == 401
    finally:
        context.close()
