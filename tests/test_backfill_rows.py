"""The tolerant reader of Extract downloads (§13) on the shared fixtures and odd files."""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.extract_rows import ExtractFormatError, Row, RowReader, normalise_header, parse_time_ms
from tests.support import ROOT

FIXTURES = ROOT.parent / "shared" / "fixtures" / "freshchat-extract"


def ms(text: str) -> int:
    """Epoch ms of an ISO time; no offset means UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def read(data: bytes, latest_ms: int = 2**43, earliest_ms: int = 0) -> tuple[list[Row], RowReader]:
    """All rows of a download given as bytes."""
    with tempfile.TemporaryFile() as tmp:
        tmp.write(data)
        reader = RowReader(tmp, latest_ms=latest_ms, earliest_ms=earliest_ms)
        return list(reader), reader


def independent(data: bytes) -> list[dict[str, str]]:
    """The fixture CSV's rows read plainly with DictReader (the oracle, not the reader)."""
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_zip_fixture_every_row_of_both_csvs() -> None:
    data = (FIXTURES / "part-1.zip").read_bytes()
    rows, reader = read(data)
    expected = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            for raw in independent(archive.read(name)):
                expected.append(
                    Row(
                        raw["conversation_id"],
                        ms(raw["resolved_at"]),
                        raw["group_id"],
                        raw["group_name"],
                    )
                )
    assert len(reader.members) == 2
    assert rows == expected and len(rows) == 80
    assert (reader.read, reader.skipped) == (80, 0)
    assert any(r.group_id == "" for r in rows) and any(r.group_name == "Billing" for r in rows)


def test_csv_fixture_title_case_headers_utc_times_and_one_malformed_row() -> None:
    data = (FIXTURES / "part-2.csv").read_bytes()
    rows, reader = read(data)
    raws = independent(data)
    good = [r for r in raws if r["Conversation ID"]]
    assert len(raws) - len(good) == 1  # the fixture's one malformed row
    assert rows == [
        Row(r["Conversation ID"], ms(r["Resolved At"]), r["Group ID"], r["Group Name"])
        for r in good
    ]
    assert (reader.read, reader.skipped) == (len(raws), 1)
    first = rows[0]
    assert (
        datetime.fromtimestamp(first.time_ms / 1000, UTC).isoformat() == "2026-11-08T05:26:48+00:00"
    )


@pytest.mark.parametrize(
    "header",
    [
        "conversation_id",
        "Conversation ID",
        "CONVERSATION-ID",
        " conversation  id ",
        "\ufeffConversation_Id",
    ],
)
def test_header_spellings_match(header: str) -> None:
    assert normalise_header(header) == "conversation_id"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-03T17:54:59.000Z", ms("2026-11-03T17:54:59+00:00")),
        ("2026-11-03T19:54:59+02:00", ms("2026-11-03T17:54:59+00:00")),
        ("2026-11-03 17:54:59", ms("2026-11-03T17:54:59+00:00")),
        ("2026-11-03T17:54:59.123", ms("2026-11-03T17:54:59.123+00:00")),
        ("1793728499", 1793728499000),
        ("1793728499123", 1793728499123),
        ("not a time", None),
        ("", None),
        ("nan", None),
        ("03/11/2026 17:54", None),
    ],
)
def test_times(text: str, expected: int | None) -> None:
    assert parse_time_ms(text) == expected


def test_unknown_columns_ignored_and_order_free() -> None:
    data = (
        b"Extra,Group Name,resolved-at,Whatever,CONVERSATION ID\r\n"
        b"x,Billing,2026-11-03T10:00:00+01:00,y,c-1\r\n"
        b"x,,2026-11-03T10:00:00Z,y,c-2\r\n"
    )
    rows, reader = read(data)
    assert rows == [
        Row("c-1", ms("2026-11-03T09:00:00+00:00"), "", "Billing"),
        Row("c-2", ms("2026-11-03T10:00:00+00:00"), "", ""),
    ]
    assert reader.skipped == 0


def test_malformed_rows_are_skipped_and_counted() -> None:
    long_name = "n" * 256
    data = (
        "conversation_id,resolved_at,group_id,group_name\n"
        "ok-1,2026-11-03T10:00:00Z,g,Name\n"
        ",2026-11-03T10:00:00Z,g,Name\n"  # no conversation id
        "c-3,,g,Name\n"  # no time
        "c-4,yesterday,g,Name\n"  # not a time
        "c-5,2026-11-03T10:00:00Z,g\n"  # a field short
        "c-6,2026-11-03T10:00:00Z,g,Name,extra\n"  # a field over
        f"c-7,2026-11-03T10:00:00Z,g,{long_name}\n"  # name over 255
        "c-8,2099-01-01T00:00:00Z,g,Name\n"  # after latest
        "c-9,2001-01-01T00:00:00Z,g,Name\n"  # before earliest
        "\n"  # a blank line is no row
        "ok-2,2026-11-03T11:00:00Z,g,\x00\x01Name\n"
    ).encode()
    rows, reader = read(
        data, latest_ms=ms("2030-01-01T00:00:00"), earliest_ms=ms("2020-01-01T00:00:00")
    )
    assert [r.conversation_id for r in rows] == ["ok-1", "ok-2"]
    assert rows[1].group_name == "Name"  # the group map's marker bytes never reach a name
    assert (reader.read, reader.skipped) == (10, 8)


def test_missing_required_column_is_a_format_error() -> None:
    with pytest.raises(ExtractFormatError, match="resolution time"):
        read(b"conversation_id,created_at\nc-1,2026-11-03T10:00:00Z\n")
    with pytest.raises(ExtractFormatError, match="conversation id"):
        read(b"interaction_id,resolved_at\n1,2026-11-03T10:00:00Z\n")


def test_empty_and_header_only_files_have_no_rows() -> None:
    assert read(b"")[0] == []
    rows, reader = read(b"conversation_id,resolved_at\r\n")
    assert rows == [] and reader.read == 0


def test_a_zip_that_is_broken_is_a_format_error() -> None:
    with pytest.raises(ExtractFormatError):
        read(b"PK\x03\x04 this is not really a zip")


def test_reads_row_by_row_from_disk(tmp_path: Path) -> None:
    """A 100,000-row ZIP member is read as a stream: rows come before the file is through."""
    path = tmp_path / "big.zip"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("a.csv", "w") as f,
    ):
        f.write(b"conversation_id,resolved_at\n")
        for n in range(100_000):
            f.write(f"c-{n},2026-11-03T10:00:00Z\n".encode())
    with path.open("rb") as file:
        reader = RowReader(file)
        rows = iter(reader)
        assert next(rows).conversation_id == "c-0"
        assert reader.read == 1  # one row parsed, not the whole file
        assert sum(1 for _ in rows) == 99_999
