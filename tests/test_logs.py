"""Log lines: the buffered request lines read like the `injixo.request` logger's JSON."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
import pytest

from app.logs import JsonFormatter, RequestLines, configure


def test_request_lines_are_json_like_the_logger_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("INFO")
    lines = RequestLines()
    lines.request({"method": "POST", "path": "/p"}, 202, 0.0, {"integration": "i1", "n": 2})
    lines.request({"method": "GET", "path": "/q"}, 200, 0.0)
    lines.add({})
    lines.flush()
    got = [orjson.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["path"] for x in got[:2]] == ["/p", "/q"]
    assert got[0]["integration"] == "i1" and got[0]["status"] == 202 and got[0]["n"] == 2
    head = {"level": "info", "logger": "injixo.request", "msg": "request"}
    assert all(x.items() >= head.items() for x in got)
    assert got[2].keys() == {"ts", *head}
    # Same timestamp format as JsonFormatter (to the millisecond, UTC offset).
    record = logging.makeLogRecord({"msg": "x"})
    formatted = orjson.loads(JsonFormatter().format(record))["ts"]
    for line in got:
        ts = datetime.fromisoformat(line["ts"])
        assert ts.tzinfo == UTC and len(line["ts"]) == len(formatted)
        assert abs((ts - datetime.fromisoformat(formatted)).total_seconds()) < 60


def test_request_lines_are_dropped_below_info(capsys: pytest.CaptureFixture[str]) -> None:
    configure("WARNING")
    try:
        lines = RequestLines()
        lines.request({"method": "GET", "path": "/q"}, 200, 0.0)
        lines.flush()
        assert capsys.readouterr().err == ""
    finally:
        configure("INFO")
