"""The counts chart's geometry: stacked bars per interval as shapes for an inline SVG.

Pure functions of the counted rows and the query; the template only draws what they return.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from app.intervals import Query

# Okabe-Ito and friends: distinguishable for most colour-vision deficiencies.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
)
WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, UPPER, LOWER = 44, 8, 12, 34  # margins: room for the tick and time labels
MAX_LABELS = 12  # 96 quarter-hours in a day: more time labels would overlap
BAR_SHARE = 0.8  # of an interval's slot; the rest is the gap between bars
EN_DASH = "\u2013"  # between an interval's ends, as a customer writes a time range


def nice_step(top: int) -> int:
    """A 1/2/5 x 10^n step giving at most five grid lines up to `top`."""
    raw = max(1.0, top / 5)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return int(factor * power)
    return int(10 * power)


def interval_label(start: datetime, minutes: int, zone: tzinfo | None) -> str:
    """`08:00-08:15` (with an en dash) on the zone's clock. The end is read off the start's
    clock, so the hour a clock repeats is 02:00-03:00 both times, not 02:00-02:00 once."""
    local = start.astimezone(zone or UTC)
    end = local.replace(tzinfo=None) + timedelta(minutes=minutes)
    return f"{local:%H:%M}{EN_DASH}{end:%H:%M}"


def interval_starts(query: Query) -> list[datetime]:
    """Every interval of the query, in UTC (stepping in UTC keeps DST days 23 or 25 h)."""
    step = timedelta(minutes=query.interval)
    starts: list[datetime] = []
    moment = query.start.astimezone(UTC)
    while moment < query.end.astimezone(UTC):
        starts.append(moment)
        moment += step
    return starts


def build_chart(rows: list[dict[str, Any]], query: Query) -> dict[str, Any]:
    """Stacked bars per interval (one colour per queue) as shapes for an inline SVG."""
    zone = query.zone or UTC
    starts = interval_starts(query)
    queues = sorted({row["queue"] for row in rows})
    colour = {q: PALETTE[i % len(PALETTE)] for i, q in enumerate(queues)}
    cells: dict[tuple[int, str], int] = {}
    for row in rows:
        at = int(datetime.fromisoformat(row["interval_start"]).timestamp())
        cells[(at, row["queue"])] = cells.get((at, row["queue"]), 0) + int(row["contacts"])
    totals = [sum(cells.get((int(s.timestamp()), q), 0) for q in queues) for s in starts]
    peak = max(totals, default=0)
    grid = nice_step(max(peak, 1))
    top = max(grid, math.ceil(max(peak, 1) / grid) * grid)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - UPPER - LOWER
    slot_w = plot_w / max(1, len(starts))
    bar_w = max(1.0, slot_w * BAR_SHARE)
    bars: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    label_every = max(1, len(starts) // MAX_LABELS)
    for index, start in enumerate(starts):
        x = LEFT + index * slot_w + (slot_w - bar_w) / 2
        base: float = UPPER + plot_h
        local = start.astimezone(zone).strftime("%H:%M")
        span = interval_label(start, query.interval, zone)
        for queue in queues:
            n = cells.get((int(start.timestamp()), queue), 0)
            if not n:
                continue
            h = plot_h * n / top
            base -= h
            bars.append(
                {
                    "x": round(x, 2),
                    "y": round(base, 2),
                    "w": round(bar_w, 2),
                    "h": round(h, 2),
                    "fill": colour[queue],
                    "title": f"{span} {queue}: {n}",
                }
            )
        if index % label_every == 0:
            labels.append({"x": round(LEFT + index * slot_w + slot_w / 2, 2), "text": local})
    ticks = [
        {"y": round(UPPER + plot_h - plot_h * v / top, 2), "text": str(v)}
        for v in range(0, top + 1, grid)
    ]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "bottom": UPPER + plot_h,
        "bars": bars,
        "labels": labels,
        "label_y": UPPER + plot_h + 20,
        "ticks": ticks,
        "legend": [{"queue": q, "fill": colour[q]} for q in queues],
    }
