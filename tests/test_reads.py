"""The read path's pure parts: aggregation (fast path and general path) against a plain
reference, and the CSV writer against the csv module."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.counts import Row, aggregate, csv_chunks, json_chunks
from app.intervals import Query, bucket_start, local_day, parse_query, zone_of
from app.lua import SLOT_MS, SLOTS_PER_DAY, UNDEFINED_QUEUE

NAMES = {0: UNDEFINED_QUEUE, 1: "Support", 2: "Billing", 3: "a,b", 4: 'say "hi"'}
FIRST_DAY = 20415  # 2025-11-23


def reference(cells: dict[tuple[int, int], int], query: Query) -> list[Row]:
    """§6 the slow, obvious way: bucket each slot, sum, sort by instant then queue name."""
    first = int(query.start.timestamp() * 1000) // SLOT_MS
    last = int(query.end.timestamp() * 1000) // SLOT_MS
    totals: dict[tuple[datetime, str], int] = defaultdict(int)
    for (slot, qid), n in cells.items():
        name = NAMES.get(qid, UNDEFINED_QUEUE)
        if first <= slot < last and query.queue in (None, name):
            totals[(bucket_start(slot, query.interval, query.zone), name)] += n
    out = []
    for (start, name), n in sorted(totals.items()):
        label = (
            start.astimezone(query.zone).isoformat()
            if query.zone
            else start.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        out.append((label, name, n))
    return out


cell_sets = st.dictionaries(
    st.tuples(
        st.integers(FIRST_DAY * SLOTS_PER_DAY, (FIRST_DAY + 3) * SLOTS_PER_DAY - 1),
        st.sampled_from([0, 1, 2, 3, 4, 9]),  # 9: a queue id with no name
    ),
    st.integers(1, 50),
    max_size=80,
)


@given(
    cells=cell_sets,
    interval=st.sampled_from([15, 30, 60]),
    zone=st.sampled_from([None, "Europe/Berlin", "Asia/Kathmandu"]),
    whole=st.booleans(),
    queue=st.sampled_from([None, "Billing", UNDEFINED_QUEUE]),
)
def test_aggregate_matches_the_plain_reference(
    cells: dict[tuple[int, int], int],
    interval: int,
    zone: str | None,
    whole: bool,
    queue: str | None,
) -> None:
    day0 = local_day(date(1970, 1, 1) + timedelta(days=FIRST_DAY), zone_of(zone))[0]
    start = day0 if whole else day0 + timedelta(hours=5)
    end = start + timedelta(days=2 if whole else 1)
    query = parse_query(start.isoformat(), end.isoformat(), str(interval), zone, queue)
    per_day: dict[int, dict[bytes, bytes]] = defaultdict(dict)
    for (slot, qid), n in cells.items():
        day, of_day = divmod(slot, SLOTS_PER_DAY)
        per_day[day][f"{of_day}:{qid}".encode()] = str(n).encode()
    first = int(start.timestamp() * 1000) // SLOT_MS
    last = int(end.timestamp() * 1000) // SLOT_MS
    assert aggregate(first, last, dict(per_day), NAMES, query) == reference(cells, query)


LABELS = st.sampled_from(["2026-11-23T08:00:00Z", "2026-10-25T02:00:00+01:00"])


@given(st.lists(st.tuples(LABELS, st.text(min_size=1), st.integers(0, 10**6))))
def test_csv_is_what_the_csv_module_writes(rows: list[Row]) -> None:
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\r\n")
    writer.writerow(["interval_start", "queue", "contacts"])
    writer.writerows(rows)
    assert b"".join(csv_chunks(rows)).decode() == expected.getvalue()


def test_json_pieces_make_one_document() -> None:
    rows = [(f"2026-11-23T{h:02d}:00:00Z", "Support", h + 1) for h in range(24)] * 500
    head = {"integration_id": "x", "revision": "7"}
    body = orjson.loads(b"".join(json_chunks(head, rows)))
    assert body["revision"] == "7" and len(body["rows"]) == len(rows)
    assert body["rows"][25] == {
        "interval_start": "2026-11-23T01:00:00Z",
        "queue": "Support",
        "contacts": 2,
    }
    assert orjson.loads(b"".join(json_chunks(head, []))) == {**head, "rows": []}


@given(st.lists(st.tuples(LABELS, st.text(min_size=1), st.integers(1, 10**6)), max_size=30))
def test_json_rows_survive_any_queue_name(rows: list[Row]) -> None:
    body = orjson.loads(b"".join(json_chunks({"revision": "1"}, rows)))
    assert [(r["interval_start"], r["queue"], r["contacts"]) for r in body["rows"]] == rows


def test_two_queue_ids_under_one_name_are_one_row() -> None:
    """An id whose name is missing reads as Undefined_Queue, like id 0: one row, summed."""
    slot = FIRST_DAY * SLOTS_PER_DAY + 20
    cells = {(slot, 0): 1, (slot, 9): 2}
    day0 = local_day(date(1970, 1, 1) + timedelta(days=FIRST_DAY), zone_of(None))[0]
    query = parse_query(day0.isoformat(), (day0 + timedelta(days=1)).isoformat(), "15", None, None)
    per_day = {FIRST_DAY: {b"20:0": b"1", b"20:9": b"2"}}
    first = int(day0.timestamp() * 1000) // SLOT_MS
    rows = aggregate(first, first + SLOTS_PER_DAY, per_day, NAMES, query)
    assert rows == reference(cells, query) == [("2025-11-23T05:00:00Z", UNDEFINED_QUEUE, 3)]
