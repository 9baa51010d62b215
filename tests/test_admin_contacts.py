"""The page's Contacts section: intervals written 08:00-08:15 (en dash), the chosen view carried
along, and the CSV download made for spreadsheets (formula cells inert)."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from app.admin.contacts import carried, file_name, inert, label_rows, page_csv
from app.intervals import parse_query
from app.main import create_app
from app.settings import Settings
from tests.page_support import saved_integration, sign_in
from tests.support import ADMIN, apply_all, at, conv_event, shard_of, store

DASH = "\u2013"
DAY = "2026-11-20"
HOSTILE = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tTabbed", "\rReturn"]


@pytest.fixture
def web(settings: Settings) -> Iterator[TestClient]:
    """The app in-process, redirects not followed."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def counted(r: redis.Redis, settings: Settings, iid: str, chats: list[tuple[str, str]]) -> None:
    """Chats solved at the given UTC times in the given queues, counted."""
    shard = shard_of(r, settings, iid)
    events = [
        conv_event(f"chat-{i}", "resolved", at(when), (f"g{i}", queue))
        for i, (when, queue) in enumerate(chats)
    ]
    store(r, settings, iid, shard, events)
    apply_all(r, settings, shard)


def cells(text: str, table: str = "counts-table") -> list[list[str]]:
    """The body cells of a table of the page, as text."""
    body = text.split(f'id="{table}"')[1].split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in rows
    ]


def test_the_table_writes_intervals_with_an_en_dash(
    web: TestClient, r: redis.Redis, settings: Settings
) -> None:
    sign_in(web)
    iid = saved_integration(web)
    counted(r, settings, iid, [(f"{DAY}T08:05", "Billing"), (f"{DAY}T08:20", "Billing")])
    page = web.get(f"/account/integrations/{iid}?day={DAY}&interval=15").text
    assert cells(page) == [
        [f"08:00{DASH}08:15", "Billing", "1"],
        [f"08:15{DASH}08:30", "Billing", "1"],
    ]
    assert f'<time datetime="{DAY}T08:00:00Z">' in page  # the exact instant stays readable
    hourly = web.get(f"/account/integrations/{iid}?day={DAY}&interval=60&tz=Asia/Kolkata").text
    assert cells(hourly) == [[f"13:00{DASH}14:00", "Billing", "2"]]  # 13:35 and 13:50


def test_a_repeated_hour_names_its_zone_abbreviation(
    web: TestClient, r: redis.Redis, settings: Settings
) -> None:
    sign_in(web)
    iid = saved_integration(web)
    counted(r, settings, iid, [("2026-10-25T00:30", "Sales"), ("2026-10-25T01:30", "Sales")])
    page = web.get(f"/account/integrations/{iid}?day=2026-10-25&interval=60&tz=Europe/Berlin")
    assert cells(page.text) == [
        [f"02:00{DASH}03:00 CEST", "Sales", "1"],
        [f"02:00{DASH}03:00 CET", "Sales", "1"],
    ]


def test_label_rows_leaves_unambiguous_labels_plain() -> None:
    query = parse_query(
        "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", "60", "Europe/Berlin", None
    )
    rows: list[dict[str, object]] = [
        {"interval_start": "2026-03-29T01:00:00+01:00", "queue": "Q", "contacts": 1},
        {"interval_start": "2026-03-29T03:00:00+02:00", "queue": "Q", "contacts": 1},
    ]
    label_rows(rows, query)
    assert [row["interval"] for row in rows] == [f"01:00{DASH}02:00", f"03:00{DASH}04:00"]
    # The day the clock goes back: even a lone row of the repeated hour says which it is.
    query = parse_query(
        "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", "60", "Europe/Berlin", None
    )
    rows = [
        {"interval_start": "2026-10-25T01:00:00+02:00", "queue": "Q", "contacts": 1},
        {"interval_start": "2026-10-25T02:00:00+01:00", "queue": "Q", "contacts": 1},
    ]
    label_rows(rows, query)
    assert [row["interval"] for row in rows] == [f"01:00{DASH}02:00", f"02:00{DASH}03:00 CET"]


def test_csv_download_is_the_shown_day_with_inert_formula_cells(
    web: TestClient, r: redis.Redis, settings: Settings
) -> None:
    sign_in(web)
    iid = saved_integration(web)  # "Acme <b>"
    counted(
        r,
        settings,
        iid,
        [(f"{DAY}T09:{i:02}", q) for i, q in enumerate([*HOSTILE, 'Plain, "quoted"'])],
    )
    view = f"day={DAY}&interval=60&tz=Europe%2FBerlin"
    page = web.get(f"/account/integrations/{iid}?{view}").text
    link = f'href="/account/integrations/{iid}/contacts.csv?{view.replace("&", "&amp;")}"'
    assert link in page
    download = web.get(f"/account/integrations/{iid}/contacts.csv?{view}")
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="injixo-acme-b-{DAY}.csv"'
    )
    assert download.headers["cache-control"] == "no-store"
    text = download.content.decode("utf-8-sig")  # with a BOM, so Excel reads UTF-8
    assert download.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["interval", "interval_start", "queue", "contacts"]
    queues = {row[2] for row in rows[1:]}
    assert queues == {"'" + q for q in HOSTILE} | {'Plain, "quoted"'}
    assert {row[0] for row in rows[1:]} == {f"10:00{DASH}11:00"}
    assert {row[1] for row in rows[1:]} == {f"{DAY}T10:00:00+01:00"}
    assert sum(int(row[3]) for row in rows[1:]) == len(HOSTILE) + 1
    # The API's CSV is exact: the same names as they are.
    api = web.get(
        f"/v1/integrations/{iid}/contacts",
        params={"from": f"{DAY}T00:00:00Z", "to": "2026-11-21T00:00:00Z", "format": "csv"},
        headers=ADMIN,
    )
    api_queues = {row[1] for row in list(csv.reader(io.StringIO(api.text)))[1:]}
    assert api_queues == {*HOSTILE, 'Plain, "quoted"'}


def test_csv_download_needs_a_session_and_a_valid_day(web: TestClient) -> None:
    iid = saved_integration(web)
    url = f"/account/integrations/{iid}/contacts.csv?day={DAY}"
    assert web.get(url).headers["location"].startswith("/signin?next=")
    sign_in(web)
    empty = web.get(url)
    assert empty.status_code == 200 and empty.content.decode("utf-8-sig").startswith("interval,")
    bad = web.get(f"/account/integrations/{iid}/contacts.csv?day={DAY}&tz=Mars/Olympus")
    assert bad.status_code == 400 and "unknown time zone" in html.unescape(bad.text).lower()
    assert web.get("/account/integrations/nosuchid00/contacts.csv").status_code == 404


def test_inert_file_name_and_carried() -> None:
    assert [inert(c) for c in ["=1", "+1", "-1", "@a", "\tx", "\rx", "a=1", "1", ""]] == [
        "'=1",
        "'+1",
        "'-1",
        "'@a",
        "'\tx",
        "'\rx",
        "a=1",
        "1",
        "",
    ]
    assert file_name("Müller & Söhne Support", "2026-11-20") == (
        "injixo-muller-sohne-support-2026-11-20.csv"
    )
    assert file_name("🚀", "2026-11-20") == "injixo-integration-2026-11-20.csv"
    assert carried({"day": "2026-11-20", "tz": "", "interval": "30", "x": "y"}) == (
        "day=2026-11-20&interval=30"
    )
    assert carried({"tz": "A" * 100}) == "tz=" + "A" * 64
    rows = [{"interval": "08:00", "interval_start": "s", "queue": "=x", "contacts": 1}]
    assert page_csv(rows) == "\ufeffinterval,interval_start,queue,contacts\r\n08:00,s,'=x,1\r\n"
