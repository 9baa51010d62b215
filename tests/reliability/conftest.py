"""The reliability suite's figures, printed at the end of the run and written as JSON, and
the secret scan that follows every test of the suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness import FIGURES, WATCH


@pytest.fixture(autouse=True)
def no_secret_left_behind() -> Iterator[None]:
    """After each test: no log of any process started so far and no error body collected so
    far holds any secret handed out so far (whatever order the tests run in)."""
    yield
    found = WATCH.scan(None)
    assert not found, f"secrets found: {found}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One figures line, when any reliability test ran."""
    if FIGURES.tests:
        terminalreporter.write_line(FIGURES.line())
        terminalreporter.write_line(f"reliability figures: {FIGURES.path()}")
