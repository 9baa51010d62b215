"""Intervals of a counts read (§6): the query, time zones, and which 15/30/60-minute
interval on a zone's real clock a 15-minute UTC slot belongs to. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import BadRequest
from app.lua import SLOT_MS

MAX_RANGE = timedelta(days=31)
INTERVALS = (15, 30, 60)  # minutes; the CLI, the page and /openapi.json offer these
_INTERVALS_TEXT = ", ".join(map(str, INTERVALS[:-1])) + f" or {INTERVALS[-1]}"
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Query:
    """A validated counts request."""

    start: datetime
    end: datetime
    interval: int
    zone: ZoneInfo | None
    queue: str | None

    def echo(self, moment: datetime) -> str:
        """An instant in the form `interval_start` takes in this query's answer."""
        return iso_in(moment, self.zone)


def zone_of(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise BadRequest(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"
        ) from None


def _instant(label: str, value: str | None, zone: ZoneInfo | None) -> datetime:
    if not value:
        raise BadRequest(f"`{label}` is required (ISO 8601, e.g. 2026-11-23T08:00:00Z)")
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise BadRequest(f"`{label}` is not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        if zone is not None:  # a local time can name two instants (or none) on DST days
            raise BadRequest(
                f"`{label}` needs its UTC offset when `tz` is given "
                f"(e.g. 2026-10-25T00:00:00+02:00): {value!r}"
            )
        parsed = parsed.replace(tzinfo=UTC)
    try:
        in_range = EARLIEST <= parsed.astimezone(UTC) <= LATEST
    except (OverflowError, ValueError):  # e.g. year 1 with a positive offset
        in_range = False
    if not in_range:
        raise BadRequest(f"`{label}` must be between 1970 and 9999: {value!r}")
    return parsed


def _aligned(moment: datetime, interval: int, zone: ZoneInfo | None) -> bool:
    local = moment.astimezone(zone or UTC)
    return local.second == 0 and local.microsecond == 0 and local.minute % interval == 0


def parse_query(
    start: str | None,
    end: str | None,
    interval: str | None,
    tz: str | None,
    queue: str | None,
) -> Query:
    """Validate the query string of a counts request; BadRequest says what is wrong."""
    try:
        minutes = int(interval) if interval else INTERVALS[0]
    except ValueError:
        minutes = -1
    if minutes not in INTERVALS:
        raise BadRequest(f"`interval` must be {_INTERVALS_TEXT} (minutes)")
    zone = zone_of(tz)
    begin, finish = _instant("from", start, zone), _instant("to", end, zone)
    if finish <= begin:
        raise BadRequest("`to` must be after `from`")
    if finish - begin > MAX_RANGE:
        raise BadRequest("the range may span at most 31 days")
    for label, moment in (("from", begin), ("to", finish)):
        if not _aligned(moment, minutes, zone):
            where = f"in {tz}" if zone else "in UTC"
            raise BadRequest(f"`{label}` must be aligned to a {minutes}-minute boundary {where}")
    return Query(begin, finish, minutes, zone, queue if queue else None)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC, to the second, with `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_in(moment: datetime, zone: ZoneInfo | None) -> str:
    """ISO 8601 with the zone's offset at that instant (UTC with `Z` when no zone)."""
    if zone is None:
        return iso_utc(moment)
    return moment.astimezone(zone).isoformat()


def local_day(day: date, zone: ZoneInfo | None) -> tuple[datetime, datetime]:
    """A whole day on the zone's real clock (23, 24 or 25 hours) as two instants."""
    start = datetime.combine(day, time(), tzinfo=zone or UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone or UTC)
    return start.astimezone(UTC), end.astimezone(UTC)


def bucket_start(slot: int, interval: int, zone: ZoneInfo | None) -> datetime:
    """Start of the interval (local clock when a zone is given) holding a 15-minute slot.

    Floored in UTC by the local minute: local arithmetic would lose which of two repeated
    local hours it is (Python resets `fold`), merging them on the day the clock goes back.
    Every offset in use is a multiple of 15 minutes and clocks change on 30-minute marks,
    so the offset is the same for the whole interval.
    """
    utc = datetime.fromtimestamp(slot * SLOT_MS / 1000, UTC)
    local = utc.astimezone(zone) if zone else utc
    return utc - timedelta(minutes=local.minute % interval)
