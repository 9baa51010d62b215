"""The reliability suite's figures: printed at the end of the run and written as JSON."""

from __future__ import annotations

import pytest

from tests.reliability.harness import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One figures line, when any reliability test ran."""
    if FIGURES.tests:
        terminalreporter.write_line(FIGURES.line())
        terminalreporter.write_line(f"reliability figures: {FIGURES.path()}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets scan goes last: it also scans what every earlier test left behind."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/reliability/test_secrets.py"))
