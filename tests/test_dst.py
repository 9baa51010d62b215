"""Local intervals on the zone's real clock (§6): days of 23 and 25 hours, repeated hours
told apart by their offsets, zones off the hour."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import redis
from starlette.testclient import TestClient

from app.errors import BadRequest
from app.intervals import local_day, parse_query
from app.settings import Settings
from tests.support import READER, apply_all, at, conv_event, create_integration, shard_of, store

G = ("g1", "Support")


def solved_at(r: redis.Redis, settings: Settings, iid: str, times: list[str]) -> None:
    """One chat solved at each UTC time, counted by the real apply script."""
    shard = shard_of(r, settings, iid)
    events = [conv_event(f"chat-{n}", "resolved", at(t), G) for n, t in enumerate(times)]
    store(r, settings, iid, shard, events)
    apply_all(r, settings, shard)


def day_rows(client: TestClient, iid: str, day: str, zone: str, interval: int) -> list[str]:
    """The local day's rows as 'interval_start contacts'."""
    start, end = local_day(date.fromisoformat(day), ZoneInfo(zone))
    tz = ZoneInfo(zone)
    query = (
        f"from={quote(start.astimezone(tz).isoformat())}&to={quote(end.astimezone(tz).isoformat())}"
        f"&interval={interval}&tz={zone}"
    )
    answer = client.get(f"/v1/integrations/{iid}/contacts?{query}", headers=READER)
    assert answer.status_code == 200, answer.text
    return [f"{row['interval_start']} {row['contacts']}" for row in answer.json()["rows"]]


def test_the_repeated_hour_of_a_fall_back_day_is_two_rows(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    # Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00Z.
    solved_at(r, settings, iid, ["2026-10-25T00:30", "2026-10-25T01:30", "2026-10-25T01:40"])
    assert day_rows(client, iid, "2026-10-25", "Europe/Berlin", 60) == [
        "2026-10-25T02:00:00+02:00 1",
        "2026-10-25T02:00:00+01:00 2",
    ]
    assert day_rows(client, iid, "2026-10-25", "Europe/Berlin", 30) == [
        "2026-10-25T02:30:00+02:00 1",
        "2026-10-25T02:30:00+01:00 2",
    ]


def test_new_york_falls_back_too(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    iid, _ = create_integration(client)
    # America/New_York, 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00Z.
    solved_at(r, settings, iid, ["2026-11-01T05:10", "2026-11-01T06:10", "2026-11-01T06:50"])
    assert day_rows(client, iid, "2026-11-01", "America/New_York", 60) == [
        "2026-11-01T01:00:00-04:00 1",
        "2026-11-01T01:00:00-05:00 2",
    ]
    assert day_rows(client, iid, "2026-11-01", "America/New_York", 30) == [
        "2026-11-01T01:00:00-04:00 1",
        "2026-11-01T01:00:00-05:00 1",
        "2026-11-01T01:30:00-05:00 1",
    ]


@pytest.mark.parametrize(
    ("zone", "day", "before", "after"),
    [
        # Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z.
        ("Europe/Berlin", "2026-03-29", "2026-03-29T00:59", "2026-03-29T01:00"),
        # America/New_York, 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z.
        ("America/New_York", "2026-03-08", "2026-03-08T06:59", "2026-03-08T07:00"),
    ],
)
def test_the_skipped_hour_of_a_spring_forward_day_has_no_row(
    client: TestClient,
    r: redis.Redis,
    settings: Settings,
    zone: str,
    day: str,
    before: str,
    after: str,
) -> None:
    iid, _ = create_integration(client)
    solved_at(r, settings, iid, [before, after])
    offsets = ("+01:00", "+02:00") if zone == "Europe/Berlin" else ("-05:00", "-04:00")
    assert day_rows(client, iid, day, zone, 60) == [
        f"{day}T01:00:00{offsets[0]} 1",
        f"{day}T03:00:00{offsets[1]} 1",
    ]
    assert day_rows(client, iid, day, zone, 30) == [
        f"{day}T01:30:00{offsets[0]} 1",
        f"{day}T03:00:00{offsets[1]} 1",
    ]


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", "2026-10-25", 25),
        ("Europe/Berlin", "2026-03-29", 23),
        ("Europe/Berlin", "2026-06-01", 24),
        ("America/New_York", "2026-11-01", 25),
        ("America/New_York", "2026-03-08", 23),
        ("Asia/Kathmandu", "2026-10-25", 24),
    ],
)
def test_a_local_day_has_as_many_intervals_as_its_clock(zone: str, day: str, hours: int) -> None:
    start, end = local_day(date.fromisoformat(day), ZoneInfo(zone))
    assert end - start == timedelta(hours=hours)
    tz = ZoneInfo(zone)
    for minutes in (30, 60):
        query = parse_query(
            start.astimezone(tz).isoformat(),
            end.astimezone(tz).isoformat(),
            str(minutes),
            zone,
            None,
        )
        assert (query.end - query.start) // timedelta(minutes=minutes) == hours * 60 // minutes


def test_a_zone_at_quarter_past_groups_by_its_own_hour(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, _ = create_integration(client)
    # Asia/Kathmandu is UTC+05:45: its 06:00 hour starts at 00:15Z.
    solved_at(r, settings, iid, ["2026-11-23T00:14", "2026-11-23T00:15", "2026-11-23T01:14"])
    rows = day_rows(client, iid, "2026-11-23", "Asia/Kathmandu", 60)
    assert rows == ["2026-11-23T05:00:00+05:45 1", "2026-11-23T06:00:00+05:45 2"]
    start = datetime(2026, 11, 23, 6, tzinfo=ZoneInfo("Asia/Kathmandu"))
    assert start.astimezone(UTC) == datetime(2026, 11, 23, 0, 15, tzinfo=UTC)


def test_with_a_zone_from_and_to_need_their_offset() -> None:
    with pytest.raises(BadRequest, match="needs its UTC offset"):
        parse_query("2026-10-25T00:00:00", "2026-10-26T00:00:00+01:00", "60", "Europe/Berlin", None)
    ok = parse_query("2026-10-25T00:00:00Z", "2026-10-26T00:00:00Z", "60", None, None)
    assert ok.start == datetime(2026, 10, 25, tzinfo=UTC)
