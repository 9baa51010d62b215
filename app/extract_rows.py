"""Rows of Freshchat Extract downloads (§13): a CSV, or a ZIP of CSVs, read as a stream.

Header names differ between downloads, so columns are matched case-insensitively with
spaces, hyphens and underscores treated alike, and unknown columns are ignored. A row
needs the conversation id and the resolution time; times without an offset are UTC.
A malformed row is skipped and counted, never guessed. The file is read from disk one row
at a time (ZIP members as streams), so a 100,000-row download costs no more memory than
one row.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, NamedTuple

#: Accepted spellings (normalised) of each column, in order of preference.
CONVERSATION_ID = ("conversation_id", "conversation_uuid")
RESOLVED_AT = ("resolved_at", "resolved_time", "resolution_time", "conversation_resolved_at")
GROUP_ID = ("group_id", "assigned_group_id")
GROUP_NAME = ("group_name", "assigned_group_name")
MAX_ID = 256  # as the live path (`app.events`) accepts them
MAX_GROUP_NAME = 255
ZIP_MAGIC = b"PK\x03\x04"
MS_THRESHOLD = 100_000_000_000  # as the live path: numbers above this are milliseconds
_SEPARATORS = re.compile(r"[\s_-]+")


class ExtractFormatError(Exception):
    """A download the reader cannot use at all (not a row of it: the whole file)."""


class Row(NamedTuple):
    """One solved chat as the download states it."""

    conversation_id: str
    time_ms: int
    group_id: str
    group_name: str


def normalise_header(name: str) -> str:
    """`Conversation ID`, `conversation-id` and `conversation_id` -> `conversation_id`."""
    return _SEPARATORS.sub("_", name.strip().lstrip("\ufeff").lower()).strip("_")


def parse_time_ms(value: str) -> int | None:
    """ISO 8601 (no offset: UTC) or epoch seconds/milliseconds -> epoch ms; None if neither."""
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            ms = moment.timestamp() * 1000
        except (OverflowError, ValueError):
            return None
    else:
        if number != number or number in (float("inf"), float("-inf")):
            return None
        ms = number if abs(number) >= MS_THRESHOLD else number * 1000
    return round(ms) if 0 < ms < 2**43 else None


@dataclass(frozen=True)
class Columns:
    """Where the wanted columns are in one CSV's rows (-1: absent)."""

    width: int
    conversation: int
    resolved: int
    group_id: int = -1
    group_name: int = -1

    @classmethod
    def of(cls, header: list[str]) -> Columns:
        """Find the columns; ExtractFormatError if a required one is missing."""
        names = [normalise_header(h) for h in header]

        def find(options: tuple[str, ...]) -> int:
            for option in options:
                if option in names:
                    return names.index(option)
            return -1

        conversation, resolved = find(CONVERSATION_ID), find(RESOLVED_AT)
        if conversation < 0 or resolved < 0:
            missing = "conversation id" if conversation < 0 else "resolution time"
            shown = ", ".join(h[:40] for h in header[:20])
            raise ExtractFormatError(f"a download has no {missing} column (columns: {shown})")
        return cls(len(header), conversation, resolved, find(GROUP_ID), find(GROUP_NAME))

    def row(self, values: list[str], earliest_ms: int, latest_ms: int) -> Row | None:
        """The row, or None when it is malformed."""
        if len(values) != self.width:
            return None
        cid = values[self.conversation].strip()
        time_ms = parse_time_ms(values[self.resolved])
        if (
            not cid
            or len(cid) > MAX_ID
            or time_ms is None
            or not earliest_ms <= time_ms <= latest_ms
        ):
            return None
        gid = values[self.group_id].strip() if self.group_id >= 0 else ""
        # NUL and \x01 open the group map's cache markers: never part of a Freshchat name.
        name = values[self.group_name] if self.group_name >= 0 else ""
        name = name.replace("\x00", "").lstrip("\x01").strip()
        if len(gid) > MAX_ID or len(name) > MAX_GROUP_NAME:
            return None
        return Row(cid, time_ms, gid, name)


@dataclass
class RowReader:
    """Iterate the rows of one downloaded file; `read` and `skipped` count as it goes (a
    row timed outside [earliest_ms, latest_ms] is malformed: before 2020 or in the future)."""

    file: IO[bytes]
    latest_ms: int = 2**43
    earliest_ms: int = 0
    read: int = 0
    skipped: int = 0
    members: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Row]:
        self.file.seek(0)
        magic = self.file.read(len(ZIP_MAGIC))
        self.file.seek(0)
        if magic == ZIP_MAGIC:
            yield from self._zip()
        else:
            yield from self._csv(self.file)

    def _zip(self) -> Iterator[Row]:
        try:
            archive = zipfile.ZipFile(self.file)
        except zipfile.BadZipFile as exc:
            raise ExtractFormatError(f"a download is not a readable ZIP ({exc})") from None
        with archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            csvs = [i for i in infos if i.filename.lower().endswith(".csv")] or infos
            for info in csvs:
                if info.filename.startswith("__MACOSX/"):
                    continue
                self.members.append(info.filename)
                try:
                    with archive.open(info) as member:
                        yield from self._csv(member)
                except (zipfile.BadZipFile, EOFError) as exc:
                    raise ExtractFormatError(
                        f"a ZIP member cannot be read ({type(exc).__name__})"
                    ) from None

    def _csv(self, binary: IO[bytes]) -> Iterator[Row]:
        # newline="" as the csv module wants; undecodable bytes become U+FFFD (a row with
        # them is still read, and skipped only if it is malformed).
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")
        try:
            rows = csv.reader(text)
            columns: Columns | None = None
            while True:
                try:
                    values = next(rows)
                except StopIteration:
                    return
                except csv.Error:  # e.g. a field over the size limit: that row is malformed
                    if columns is None:
                        raise ExtractFormatError("a download's header cannot be read") from None
                    self.read += 1
                    self.skipped += 1
                    continue
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue  # a blank line is no row
                if columns is None:
                    columns = Columns.of(values)
                    continue
                self.read += 1
                row = columns.row(values, self.earliest_ms, self.latest_ms)
                if row is None:
                    self.skipped += 1
                else:
                    yield row
        finally:
            text.detach()  # leave the underlying file (or ZIP member) to its owner
