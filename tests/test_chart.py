"""The counts chart's geometry, alone: pure functions of rows and a query, no web, no Redis."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.admin.chart import (
    EN_DASH,
    HEIGHT,
    LEFT,
    LOWER,
    PALETTE,
    RIGHT,
    UPPER,
    WIDTH,
    build_chart,
    interval_label,
    nice_step,
)
from app.intervals import INTERVALS, Query, parse_query

BOTTOM = HEIGHT - LOWER  # 246: the baseline of the plot area
DAY = ("2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z")


def utc_day(interval: int) -> Query:
    """2026-11-20 in UTC at the given interval."""
    return parse_query(*DAY, str(interval), None, None)


def row(start: str, queue: str, contacts: int) -> dict[str, Any]:
    """One counts row as `read_counts` returns it."""
    return {"interval_start": start, "queue": queue, "contacts": contacts}


def test_chart_stacks_queues_per_interval() -> None:
    query = parse_query("2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z", "60", None, None)
    rows = [
        {"interval_start": "2026-11-20T08:00:00Z", "queue": "Billing", "contacts": 1},
        {"interval_start": "2026-11-20T08:00:00Z", "queue": "Customer Support", "contacts": 3},
    ]
    chart = build_chart(rows, query)
    assert len(chart["bars"]) == 2
    assert [item["queue"] for item in chart["legend"]] == ["Billing", "Customer Support"]
    heights = sorted(bar["h"] for bar in chart["bars"])
    assert heights[1] == pytest.approx(3 * heights[0], rel=0.01)
    assert chart["labels"][0]["text"] == "00:00"


def test_one_bar_fills_the_plot_at_its_interval() -> None:
    chart = build_chart([row("2026-11-20T08:00:00Z", "Billing", 4)], utc_day(15))
    # 96 slots of 908/96 px; the 08:00 slot is the 33rd; the bar is 80 % of its slot.
    assert chart["bars"] == [
        {
            "x": 347.61,
            "y": 12.0,
            "w": 7.57,
            "h": 234.0,
            "fill": PALETTE[0],
            "title": "08:00\u201308:15 Billing: 4",
        }
    ]
    assert chart["ticks"] == [
        {"y": 246.0, "text": "0"},
        {"y": 187.5, "text": "1"},
        {"y": 129.0, "text": "2"},
        {"y": 70.5, "text": "3"},
        {"y": 12.0, "text": "4"},
    ]
    assert (chart["left"], chart["right"], chart["bottom"]) == (LEFT, WIDTH - RIGHT, BOTTOM)


def test_no_rows_draw_no_bars_and_a_zero_to_one_axis() -> None:
    chart = build_chart([], utc_day(60))
    assert chart["bars"] == [] and chart["legend"] == []
    assert chart["ticks"] == [{"y": 246.0, "text": "0"}, {"y": 12.0, "text": "1"}]
    assert [label["text"] for label in chart["labels"]] == [f"{h:02}:00" for h in range(0, 24, 2)]


def test_rows_of_one_interval_and_queue_are_added_up() -> None:
    rows = [row("2026-11-20T08:00:00Z", "Billing", 2), row("2026-11-20T08:00:00Z", "Billing", 3)]
    [bar] = build_chart(rows, utc_day(60))["bars"]
    assert bar["title"] == "08:00\u201309:00 Billing: 5"
    assert bar["h"] == 234.0


def test_bars_never_leave_the_plot_area() -> None:
    queues = [f"Queue {i:02}" for i in range(12)]  # more queues than colours
    rows = [
        row(f"2026-11-20T{hour:02}:{minute:02}:00Z", queue, 1 + (hour * 7 + i * 3 + minute) % 13)
        for hour in range(24)
        for minute in (0, 15, 30, 45)
        for i, queue in enumerate(queues)
        if (hour + i) % 3
    ]
    for interval in INTERVALS:
        chart = build_chart(rows, utc_day(interval))
        assert chart["bars"]
        for bar in chart["bars"]:
            assert bar["y"] >= UPPER - 0.01
            assert bar["y"] + bar["h"] <= BOTTOM + 0.01
            assert bar["x"] >= LEFT and bar["x"] + bar["w"] <= WIDTH - RIGHT + 0.01
        # The tallest stack reaches at most the top tick, which sits inside the plot.
        assert min(bar["y"] for bar in chart["bars"]) >= chart["ticks"][-1]["y"] - 0.01
        assert chart["ticks"][-1]["y"] >= UPPER
    legend = build_chart(rows, utc_day(60))["legend"]
    assert [item["fill"] for item in legend[10:]] == [PALETTE[0], PALETTE[1]]


@pytest.mark.parametrize(
    ("top", "step"),
    [(1, 1), (5, 1), (6, 2), (10, 2), (11, 5), (25, 5), (26, 10), (51, 20), (101, 50), (1001, 500)],
)
def test_nice_step_examples(top: int, step: int) -> None:
    assert nice_step(top) == step


def test_nice_steps_are_1_2_5_times_a_power_of_ten_with_at_most_five_lines() -> None:
    for top in range(1, 20_001):
        step = nice_step(top)
        power = 10 ** math.floor(math.log10(step))
        assert step // power in (1, 2, 5) and step % power == 0, (top, step)
        assert math.ceil(top / step) <= 5, (top, step)


@pytest.mark.parametrize("interval", INTERVALS)
def test_a_regular_day_has_twelve_time_labels(interval: int) -> None:
    labels = build_chart([], utc_day(interval))["labels"]
    assert len(labels) == 12
    assert labels[0]["text"] == "00:00" and labels[-1]["text"] == "22:00"


def test_a_day_with_a_dst_change_has_23_intervals_in_local_time() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29: bars and labels are in local time.
    query = parse_query(
        "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", "60", "Europe/Berlin", None
    )
    rows = [
        row("2026-03-29T01:00:00+01:00", "Billing", 1),
        row("2026-03-29T03:00:00+02:00", "Billing", 2),
    ]
    chart = build_chart(rows, query)
    texts = [label["text"] for label in chart["labels"]]
    assert texts[:3] == ["00:00", "01:00", "03:00"] and "02:00" not in texts
    # 23 slots of 908/23 px: 01:00 is the second slot, 03:00 the third.
    assert [(bar["x"], bar["h"], bar["title"]) for bar in chart["bars"]] == [
        (87.43, 117.0, "01:00\u201302:00 Billing: 1"),
        (126.9, 234.0, "03:00\u201304:00 Billing: 2"),
    ]


def test_interval_labels_read_the_zones_clock_with_an_en_dash() -> None:
    start = datetime(2026, 11, 20, 7, 45, tzinfo=UTC)
    assert EN_DASH == "\u2013"
    assert interval_label(start, 15, None) == "07:45\u201308:00"
    assert interval_label(start, 15, ZoneInfo("Asia/Kolkata")) == "13:15\u201313:30"
    assert interval_label(datetime(2026, 11, 20, 23, 0, tzinfo=UTC), 60, None) == (
        "23:00\u201300:00"
    )
    # The hour Europe/Berlin repeats on 2026-10-25 reads 02:00-03:00 both times.
    berlin = ZoneInfo("Europe/Berlin")
    for utc_hour in (0, 1):
        moment = datetime(2026, 10, 25, utc_hour, tzinfo=UTC)
        assert interval_label(moment, 60, berlin) == "02:00\u201303:00"
    # The hour it skips on 2026-03-29: 01:00 is followed by 03:00.
    assert interval_label(datetime(2026, 3, 29, 0, tzinfo=UTC), 60, berlin) == "01:00\u201302:00"
