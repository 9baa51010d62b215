"""What browser tests share: Debian's Chromium driven by Playwright, numbered screenshots,
and signing in to the page."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support import ADMIN_TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Shots:
    """Numbered full-page screenshots, one per step."""

    folder: Path
    taken: int = 0

    def __call__(self, page: Page, step: str) -> None:
        """Save the page as `NN-step.png`."""
        self.taken += 1
        page.screenshot(path=str(self.folder / f"{self.taken:02d}-{step}.png"), full_page=True)


def shots_in(test_name: str, tmp_path: Path) -> Shots:
    """Screenshots in `$BROWSER_SHOTS/<test name>/` when set, else in the test's tmp_path."""
    root = os.environ.get("BROWSER_SHOTS")
    folder = Path(root) / test_name if root else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return Shots(folder)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless; Playwright never downloads a browser here."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Page, base: str) -> None:
    """Sign in with the admin token; lands on the integrations list."""
    page.goto(base + "/signin")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(base + "/account/integrations")
