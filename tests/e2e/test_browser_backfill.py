"""Import history (§13) in real headless Chromium, against real web and worker processes and
the stand-in Extract API: the offer right after *Save integration*, a range error inline, an
import of four days whose progress bar goes from 0 to done by itself (no reload), its
chats in the Contacts section, and a second import cancelled from the page.

Every step leaves a screenshot in `$BROWSER_SHOTS/<test>/` (or the test's tmp_path).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from app.settings import Settings
from tests.backfill_support import (
    backfill_settings,
    days_ago,
    expected_counts,
    random_rows,
    today,
)
from tests.e2e.browser_support import Shots, chromium, shots_in, sign_in
from tests.extract_standin import ExtractRow, ExtractStandIn, running
from tests.reliability.harness import stack

pytestmark = pytest.mark.e2e

DAYS = 4
ENV = {"BACKFILL_SUBMIT_EVERY_SECONDS": "0", "BACKFILL_WINDOW_DAYS": "1"}
HELD_AT = 3  # the third report's download waits until the test has seen the bar halfway


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Shots:
    """Numbered screenshots of this test."""
    return shots_in(request.node.name, tmp_path)


@pytest.fixture
def fc() -> Iterator[ExtractStandIn]:
    """The stand-in Freshchat: key check, Extract API and download host."""
    with running() as standin:
        yield standin


def test_import_progress_bar_updates_by_itself(
    settings: Settings, browser: Browser, fc: ExtractStandIn, shots: Shots
) -> None:
    bs = backfill_settings(settings.redis_url, backfill_window_days=1)
    rows = random_rows(random.Random(4), today() - timedelta(days=DAYS), DAYS, 400)
    fc.script.rows = rows
    halfway = threading.Event()

    def hold() -> None:
        # Served in the stand-in's thread: the worker waits in its download meanwhile.
        if len(fc.of("download")) == HELD_AT:
            halfway.wait(60)

    fc.script.after_download = hold
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        with stack(bs, ENV) as s:
            web = s.web()
            s.worker()
            sign_in(page, web.url)
            _save_and_see_the_offer(page, web.url, fc, shots)
            _import_and_watch(page, shots, halfway)
            _counted(page, rows)
            _cancel_another(page, shots)
            _jobs_in_the_dashboard(page, bs.rq_queue, shots)
    finally:
        halfway.set()
        context.close()
    assert errors == []  # no CSP refusal of the polling, no script error, no failed load


def _save_and_see_the_offer(page: Page, base: str, fc: ExtractStandIn, shots: Shots) -> None:
    """Save an integration whose Freshchat is the stand-in: the offer is right there."""
    page.goto(base + "/account/integrations/new/freshworks/freshchat")
    page.get_by_label("Name", exact=True).fill("Acme History")
    page.get_by_label("Freshchat domain").fill(fc.domain)
    page.get_by_label("API key", exact=True).fill(fc.script.api_key)
    page.get_by_role("button", name="Save integration").click()
    expect(page.get_by_text("The integration was saved.")).to_be_visible()
    offer = page.locator("#history-offer")
    expect(offer.get_by_role("button", name="Import the last 28 days")).to_be_visible()
    expect(offer).to_contain_text(f"{days_ago(28)} to {days_ago(1)}, UTC")
    expect(page.locator("#history-from")).to_have_value(days_ago(28))
    expect(page.locator("#history-to")).to_have_value(days_ago(1))
    page.locator("#history-offer").scroll_into_view_if_needed()
    shots(page, "offer-after-save")
    # A range the wrong way round: the error at its field, what was typed kept.
    page.locator("#history-from").fill(days_ago(1))
    page.locator("#history-to").fill(days_ago(DAYS))
    page.get_by_role("button", name="Import these days").click()
    expect(page.locator("#history-from")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#history-from-error")).to_contain_text(") is after to (")
    expect(page.locator("#history-to")).to_have_value(days_ago(DAYS))
    expect(page.locator("#no-imports")).to_be_visible()
    page.locator("#history").scroll_into_view_if_needed()
    shots(page, "range-error")


def _import_and_watch(page: Page, shots: Shots, halfway: threading.Event) -> None:
    """Start a four-day import; the bar moves 0 → 2 (held there) → 4 without a reload."""
    page.locator("#history-from").fill(days_ago(DAYS))
    page.locator("#history-to").fill(days_ago(1))
    page.get_by_role("button", name="Import these days").click()
    expect(page.locator("#history-notice")).to_have_text(
        f"Importing the chats solved from {days_ago(DAYS)} to {days_ago(1)} (UTC days)."
    )
    row = page.locator("#imports tbody tr").first
    bar = row.locator("progress")
    expect(bar).to_have_attribute("max", str(DAYS))
    assert bar.get_attribute("value") == "0"  # as the page was served
    # From here on nothing may reload the page: a marker in it must survive to the end, and
    # every value the bar takes is recorded.
    page.evaluate(
        """(bar) => {
            window.notReloaded = true;
            window.barValues = [bar.value];
            new MutationObserver(() => window.barValues.push(bar.value))
                .observe(bar, {attributes: true, attributeFilter: ["value"]});
        }""",
        bar.element_handle(),
    )
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.locator("#history").scroll_into_view_if_needed()
    shots(page, "import-started")

    expect(bar).to_have_attribute("value", str(HELD_AT - 1), timeout=60_000)
    expect(row.locator("[data-field=label]")).to_have_text("Importing")
    expect(row.locator("[data-field=text]")).to_contain_text(
        f"{HELD_AT - 1} of {DAYS} reports imported"
    )
    expect(row.get_by_role("button", name="Cancel")).to_be_visible()
    shots(page, "import-halfway")
    halfway.set()

    expect(row.locator("[data-field=label]")).to_have_text("Done", timeout=60_000)
    expect(bar).to_have_attribute("value", str(DAYS))
    expect(row.locator("[data-field=text]")).to_contain_text(f"All {DAYS} reports imported")
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator("#history-status")).to_contain_text("Done")
    shots(page, "import-done")
    assert page.evaluate("window.notReloaded") is True and navigations == []
    values = page.evaluate("window.barValues")
    assert values == sorted(values) and values[0] == 0 and values[-1] == DAYS, values
    assert HELD_AT - 1 in values, values
    # It stopped asking once done.
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    time.sleep(2.5)
    assert [url for url in asked if url.endswith(".json")] == []


def _counted(page: Page, rows: list[ExtractRow]) -> None:
    """The imported chats are counted: the Contacts section shows yesterday's total."""
    day = days_ago(1)
    expected = sum(n for (slot, _), n in expected_counts(rows).items() if slot.startswith(day))
    assert expected > 0
    deadline = time.monotonic() + 30
    while True:  # the worker drains the imported chats moments after the import
        page.get_by_label("Day", exact=True).fill(day)
        page.get_by_role("button", name="Show").click()
        total = page.locator("#counts-total")
        if (total.count() and total.inner_text() == str(expected)) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    expect(page.locator("#counts-total")).to_have_text(str(expected))


def _cancel_another(page: Page, shots: Shots) -> None:
    """A second import, cancelled from the page (after confirming): it ends cancelled."""
    page.locator("#history-from").fill(days_ago(2))
    page.locator("#history-to").fill(days_ago(1))
    page.get_by_role("button", name="Import these days").click()
    row = page.locator("#imports tbody tr").first
    expect(row).not_to_have_attribute("data-state", "done")
    row.get_by_role("button", name="Cancel").click()
    notice = page.locator("#history-notice")
    expect(notice).to_have_text(
        re.compile(r"The import was cancelled\.|The import stops after the step it is on\.")
    )
    row = page.locator("#imports tbody tr").first
    expect(row.locator("[data-field=label]")).to_have_text("Cancelled")
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator("#imports tbody tr")).to_have_count(2)
    page.locator("#history").scroll_into_view_if_needed()
    shots(page, "second-import-cancelled")


def _jobs_in_the_dashboard(page: Page, queue: str, shots: Shots) -> None:
    """The import ran as RQ jobs: the operator finds them, done, in /rq (linked from the page)."""
    page.get_by_role("link", name="RQ dashboard").click()
    expect(page).to_have_title("RQ dashboard")
    row = page.locator("#queues tbody tr[data-role=queue]", has_text=queue)
    finished = row.locator("td").nth(5).locator("a")  # queued, deferred, scheduled, started
    expect(finished).not_to_have_text("0")
    shots(page, "rq-queues")
    finished.click()
    expect(page.locator("#jobs")).to_contain_text("backfill ")
    shots(page, "rq-finished-backfill-jobs")
