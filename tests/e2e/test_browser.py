"""The admin page in real headless Chromium (Debian's, driven by Playwright; no download).

One walk through the article: sign in → empty list with the Freshworks tile → Select
model → Freshchat → Add integration → each inline error → Save integration → generate
and copy the injixo API key → events posted with it are counted and shown for their day
(table and chart) → the key is revoked in the page and stops working.
"""

from __future__ import annotations

import json
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
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.settings import Settings
from tests.redis_server import free_port
from tests.support import ADMIN, ADMIN_TOKEN, ROOT, at, conv_event, env_for, post_events

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GOOD_KEY = "good-key"
SCREENSHOT = Path("/tmp/admin-page.png")
# A recent past day, so retention windows never expire the test's counts.
DAY = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()


class _StandinHandler(BaseHTTPRequestHandler):
    """Freshchat's `GET /v2/groups` (key check) and `GET /v2/groups/{id}`."""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {GOOD_KEY}":
            self._answer(401, {"message": "Unauthorized"})
        elif self.path.split("?")[0] == "/v2/groups":
            self._answer(200, {"groups": [{"id": "g1", "name": "Customer Support"}]})
        elif self.path.startswith("/v2/groups/"):
            self._answer(200, {"id": self.path.rsplit("/", 1)[1], "name": "Customer Support"})
        else:
            self._answer(404, {"message": "not found"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def standin() -> Iterator[str]:
    """A tiny stand-in Freshchat on loopback; yields its `127.0.0.1:PORT`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandinHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


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
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


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


def fill_form(page: Page, name: str, domain: str, key: str) -> None:
    """Fill the three fields and click Save integration."""
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Freshchat domain").fill(domain)
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Save integration").click()


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


def test_article_flow_in_chromium(web: Web, browser: Browser, standin: str) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web.base)
    page = context.new_page()
    page.set_default_timeout(15_000)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        _walk(page, web, standin)
    finally:
        context.close()
    # The form's inline errors come with 4xx/502 statuses, which Chromium logs; anything
    # else (a CSP violation, a missing static file, a script error) fails the test.
    expected = tuple(f"status of {code} " for code in (400, 401, 409, 502))
    assert [e for e in console_errors if not any(code in e for code in expected)] == []


def _walk(page: Page, web: Web, standin: str) -> None:
    # Sign in: every page sends us to the sign-in form first.
    page.goto(web.base + "/")
    expect(page).to_have_url(f"{web.base}/signin?next=%2Faccount%2Fintegrations")
    page.get_by_label("Admin token").fill("wrong-token-wrong-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#token-error")).to_contain_text("not the admin token")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(web.base + "/account/integrations")

    # 1. Account > Integrations, empty: the Freshworks tile is there right away.
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs).to_contain_text("Account")
    expect(crumbs).to_contain_text("Integrations")
    expect(page.get_by_role("heading", name="Freshworks")).to_be_visible()
    expect(page.get_by_role("link", name="Select model")).to_be_visible()
    page.screenshot(path=str(SCREENSHOT.with_name("admin-page-empty.png")), full_page=True)

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

    # Each inline error, with the name and domain kept and the API key never echoed.
    fill_form(page, "Acme Support", "not a domain", GOOD_KEY)
    assert "is not a Freshchat domain" in field_error(page, "freshchat_domain")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Acme Support")
    expect(page.get_by_label("Freshchat domain")).to_have_value("not a domain")
    expect(page.get_by_label("API key", exact=True)).to_have_value("")

    fill_form(page, "existing", f"http://{standin}", GOOD_KEY)
    assert "already exists" in field_error(page, "name")

    fill_form(page, "Acme Support", f"http://{standin}", "wrong-key")
    assert "rejected the API key" in field_error(page, "freshchat_api_key")

    closed = free_port()
    fill_form(page, "Acme Support", f"http://127.0.0.1:{closed}", GOOD_KEY)
    assert "Could not reach Freshchat" in field_error(page, "freshchat_domain")
    page.screenshot(path=str(SCREENSHOT.with_name("admin-page-form.png")), full_page=True)

    # 5. Save integration → the Install the injixo app section.
    fill_form(page, "Acme Support", f"http://{standin}", GOOD_KEY)
    expect(page.get_by_role("heading", name="Install the injixo app")).to_be_visible()
    iid = page.url.split("/account/integrations/")[1].split("?")[0]
    expect(page.get_by_text("No injixo API key yet.")).to_be_visible()

    # Generate the injixo API key; it is shown once, with a working Copy button.
    page.get_by_role("button", name="Generate injixo API key").click()
    api_key = page.locator("#new-key").input_value()
    assert api_key.startswith("ijx_") and len(api_key) > 40
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == api_key
    page.screenshot(path=str(SCREENSHOT.with_name("admin-page-key.png")), full_page=True)
    assert len(table_rows(page, "#keys")) == 1
    # Post/redirect/get: the page showing the key is a plain GET; a reload shows it no more
    # and generates no other key.
    assert page.url.split("#")[0] == f"{web.base}/account/integrations/{iid}"
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    assert api_key not in page.content()
    assert len(table_rows(page, "#keys")) == 1

    # Events sent with the key are accepted and counted by a worker.
    with httpx.Client(base_url=web.base, timeout=15) as api:
        accepted = post_events(api, api_key, events_for_the_day())
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"accepted": 6, "ignored": 0}
    run_worker_burst(web)

    # The counts view for that day: the table shows exactly those numbers.
    page.goto(f"{web.base}/account/integrations/{iid}")
    assert api_key not in page.content()  # shown once only
    expect(page.locator("#last-event")).not_to_have_text("never")
    expect(page.locator("#health")).to_have_text("Receiving events")
    page.get_by_label("Day", exact=True).fill(DAY)
    page.get_by_label("Interval", exact=True).select_option("15")
    page.get_by_role("button", name="Show").click()
    assert table_rows(page, "#counts-table") == [
        [f"{DAY}T08:00:00Z", "Billing", "1"],
        [f"{DAY}T08:00:00Z", "Customer Support", "2"],
        [f"{DAY}T08:15:00Z", "Customer Support", "1"],
    ]
    expect(page.locator("#counts-total")).to_have_text("4")
    expect(page.locator("#counts-chart > rect")).to_have_count(3)
    expect(page.locator(".legend")).to_contain_text("Customer Support")

    page.get_by_label("Interval", exact=True).select_option("60")
    page.get_by_role("button", name="Show").click()
    assert table_rows(page, "#counts-table") == [
        [f"{DAY}T08:00:00Z", "Billing", "1"],
        [f"{DAY}T08:00:00Z", "Customer Support", "3"],
    ]
    page.get_by_label("Time zone").fill("Asia/Kolkata")
    page.get_by_role("button", name="Show").click()
    assert table_rows(page, "#counts-table") == [
        [f"{DAY}T13:00:00+05:30", "Billing", "1"],
        [f"{DAY}T13:00:00+05:30", "Customer Support", "3"],
    ]
    # A day whose clock goes back: 25 local hours, the repeated 02:00 twice (§6).
    dst = [
        conv_event(str(uuid.uuid4()), "resolved", at(f"2026-10-25T{t}"), ("g1", "Customer Support"))
        for t in ("00:30:00", "01:30:00")
    ]
    with httpx.Client(base_url=web.base, timeout=15) as api:
        assert post_events(api, api_key, dst).status_code == 202
    run_worker_burst(web)
    page.get_by_label("Day", exact=True).fill("2026-10-25")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_role("button", name="Show").click()
    assert table_rows(page, "#counts-table") == [
        ["2026-10-25T02:00:00+02:00", "Customer Support", "1"],
        ["2026-10-25T02:00:00+01:00", "Customer Support", "1"],
    ]
    expect(page.locator("#counts-chart > rect")).to_have_count(2)
    page.get_by_label("Day", exact=True).fill(DAY)
    page.get_by_label("Time zone").fill("")
    page.get_by_label("Interval", exact=True).select_option("15")
    page.get_by_role("button", name="Show").click()
    page.locator("#counts").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The list shows the new integration with its status columns.
    page.goto(web.base + "/account/integrations")
    expect(page.locator("#integrations")).to_contain_text("Acme Support")
    page.screenshot(path=str(SCREENSHOT.with_name("admin-page-list.png")), full_page=True)

    # Revoke the key in the page: ingestion with it fails at once.
    page.goto(f"{web.base}/account/integrations/{iid}#install")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("was revoked")).to_be_visible()
    expect(page.locator("#keys")).to_contain_text("Revoked")
    expect(page.get_by_role("button", name="Revoke key")).to_have_count(0)
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


def test_rq_dashboard_opens_with_the_page_session_in_chromium(web: Web, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        # A 401 carries a Basic challenge, which headless Chromium turns into a navigation
        # error: ask through the context's own client, which shares its cookie jar.
        assert context.request.get(web.base + "/rq/").status == 401
        page.goto(web.base + "/signin")
        page.get_by_label("Admin token").fill(ADMIN_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(web.base + "/account/integrations")
        # The session cookie (SameSite=Strict, path /) goes along to the dashboard.
        dashboard = page.goto(web.base + "/rq/")
        assert dashboard is not None and dashboard.status == 200
        expect(page).to_have_title("RQ dashboard")
        # Its styles and scripts load: the queues table is filled in, the page is styled.
        expect(page.get_by_text("Loading...")).to_have_count(0)
        expect(page.locator("table").first).to_contain_text("Queue")
        styled = "[...document.styleSheets].filter(s => s.cssRules.length > 0).length"
        assert page.evaluate(styled) >= 2  # bootstrap and main.css
        assert context.request.get(web.base + "/rq/").status == 200  # the same jar, signed in
        page.goto(web.base + "/account/integrations")
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(web.base + "/signin")
        assert context.request.get(web.base + "/rq/").status == 401
    finally:
        context.close()
