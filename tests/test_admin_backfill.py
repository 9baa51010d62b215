"""The page's *Import history* (§13): the offer right after *Save integration*, the range
form with inline errors, the section listing imports, the JSON its progress bars follow
(session only), and cancel; every POST answers 303 to the section."""

from __future__ import annotations

import html
import random
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from app.backfills import Backfills
from app.main import create_app
from app.settings import Settings
from tests.backfill_support import (
    backfill_settings,
    days_ago,
    new_integration,
    random_rows,
    today,
)
from tests.extract_standin import ExtractStandIn, running
from tests.page_support import FORM, saved_integration, sign_in
from tests.support import ADMIN
from workers.backfill import Backfiller


@pytest.fixture
def bs(settings: Settings) -> Settings:
    """Backfill settings: the stand-in's http:// domain allowed, no submission spacing."""
    return backfill_settings(settings.redis_url)


@pytest.fixture
def web(bs: Settings) -> Iterator[TestClient]:
    """The app in-process; redirects are not followed so each step can be checked."""
    with TestClient(create_app(bs), follow_redirects=False) as client:
        yield client


@pytest.fixture
def fc() -> Iterator[ExtractStandIn]:
    """The stand-in Freshchat (key check, Extract API and download host)."""
    with running() as standin:
        yield standin


def page_of(web: TestClient, iid: str) -> str:
    """The integration page's text, unescaped."""
    answer = web.get(f"/account/integrations/{iid}")
    assert answer.status_code == 200, answer.text
    return html.unescape(answer.text)


def post_to_section(web: TestClient, url: str, data: dict[str, str]) -> str:
    """POST a form: 303 to the history section; that page's text."""
    answer = web.post(url, data=data)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.endswith("#history"), location
    return page_of(web, location.split("/account/integrations/")[1].split("#")[0])


def hidden(page: str, form_id: str, name: str) -> str:
    """A hidden field's value in one form (by the form's id or its button's)."""
    form = page[page.index(f'id="{form_id}"') :] if f'id="{form_id}"' in page else page
    found = re.search(rf'name="{name}" value="([^"]*)"', form)
    assert found, form[:2000]
    return found.group(1)


def offer_form(page: str) -> str:
    """The offer's section, where its form and its one button are."""
    start = page.index('id="history-offer"')
    return page[start : page.index("</section>", start)]


def backfills(web: TestClient, iid: str) -> list[dict[str, Any]]:
    """The integration's backfills as the API lists them."""
    listed: list[dict[str, Any]] = web.get(
        f"/v1/integrations/{iid}/backfills", headers=ADMIN
    ).json()["backfills"]
    return listed


def test_the_offer_after_save_imports_the_last_28_days(web: TestClient, fc: ExtractStandIn) -> None:
    csrf = sign_in(web)
    saved = web.post(
        FORM,
        data={
            "csrf": csrf,
            "name": "Acme",
            "freshchat_domain": fc.domain,
            "freshchat_api_key": fc.script.api_key,
        },
    )
    assert saved.status_code == 303, saved.text
    iid = saved.headers["location"].split("/account/integrations/")[1].split("#")[0]
    page = page_of(web, iid)
    assert "The integration was saved." in page
    offer = offer_form(page)
    first, last = days_ago(28), days_ago(1)
    assert "Import the last 28 days" in offer and f"({first} to {last}, UTC)" in offer
    assert offer.count("<button") == 1 and 'method="post"' in offer
    # The history section shows the same range in its form, and nothing imported yet.
    assert 'id="no-imports"' in page
    assert f'id="history-from" name="from" type="date" value="{first}"' in page
    assert f'id="history-to" name="to" type="date" value="{last}"' in page
    # One click: 303 to the section, which lists the import waiting to start.
    data = {"csrf": hidden(offer, "history-offer", "csrf"), "from": first, "to": last}
    after = post_to_section(web, f"/account/integrations/{iid}/backfills", data)
    assert f"Importing the chats solved from {first} to {last} (UTC days)." in after
    [started] = backfills(web, iid)
    assert (started["from"], started["to"], started["state"]) == (first, last, "queued")
    bid = started["backfill_id"]
    row = after[after.index(f'id="import-{bid}"') :]
    assert f'data-poll="/account/integrations/{iid}/backfills/{bid}.json"' in row[:400]
    assert "Waiting to start" in row and 'value="0"' in row and "<progress" in row
    assert 'id="history-offer"' not in after  # said once; a reload posts nothing either
    reloaded = page_of(web, iid)
    assert "Importing the chats solved" not in reloaded and len(backfills(web, iid)) == 1
    # No jargon a customer would not understand.
    section = reloaded[reloaded.index('id="history"') :]
    assert "shard" not in section.lower() and "window" not in section.lower()


def test_range_form_errors_are_inline_and_keep_what_was_typed(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    url = f"/account/integrations/{iid}/backfills"
    tomorrow = (today() + timedelta(days=1)).isoformat()
    page = post_to_section(web, url, {"csrf": csrf, "from": days_ago(3), "to": tomorrow})
    assert 'id="history-to-error"' in page and "To is in the future" in page
    assert 'aria-describedby="history-hint history-to-error"' in page
    to_field = page[page.index('id="history-to"') :][:400]
    assert 'aria-invalid="true"' in to_field and f'value="{tomorrow}"' in to_field
    from_field = page[page.index('id="history-from"') :][:400]
    assert 'aria-invalid="true"' not in from_field and f'value="{days_ago(3)}"' in from_field
    page = post_to_section(web, url, {"csrf": csrf, "from": days_ago(1), "to": days_ago(3)})
    assert 'id="history-from-error"' in page and ") is after to (" in page
    page = post_to_section(web, url, {"csrf": csrf, "from": "", "to": days_ago(1)})
    assert "From is required" in page
    page = post_to_section(web, url, {"csrf": csrf, "from": days_ago(500), "to": days_ago(1)})
    assert "older than the counts retention" in page
    assert backfills(web, iid) == []
    # The errors were said once: a reload shows the form fresh.
    assert 'id="history-from-error"' not in page_of(web, iid)
    # One import at a time: the second is refused in words, the first stays.
    post_to_section(web, url, {"csrf": csrf, "from": days_ago(3), "to": days_ago(1)})
    page = post_to_section(web, url, {"csrf": csrf, "from": days_ago(5), "to": days_ago(1)})
    assert "An import of this integration is already under way" in page
    assert len(backfills(web, iid)) == 1
    # Without the page's CSRF token nothing is started.
    assert web.post(url, data={"from": days_ago(3), "to": days_ago(1)}).status_code == 403
    # Opened by GET, the action leads to the section.
    assert web.get(url).headers["location"] == f"/account/integrations/{iid}#history"


def test_the_progress_json_needs_a_session_and_follows_the_import_to_done(
    web: TestClient, bs: Settings, r: redis.Redis, fc: ExtractStandIn
) -> None:
    fc.script.rows = random_rows(random.Random(3), today() - timedelta(days=3), 3, 200)
    integration = new_integration(bs, fc)
    iid = integration.id
    created = Backfills(r, bs).create(iid, {"from": days_ago(3), "to": days_ago(1)})
    bid = created["backfill_id"]
    url = f"/account/integrations/{iid}/backfills/{bid}.json"
    signed_out = web.get(url)
    assert signed_out.status_code == 401 and signed_out.json()["reason"] == "unauthorized"
    assert iid not in signed_out.text
    sign_in(web)
    queued = web.get(url)
    assert queued.status_code == 200 and queued.headers["cache-control"] == "no-store"
    body = queued.json()
    assert (body["state"], body["label"], body["finished"]) == ("queued", "Waiting to start", False)
    assert (body["windows_done"], body["windows_total"]) == (0, 1)
    assert web.get(f"/account/integrations/{iid}/backfills/nobackfill.json").status_code == 404
    assert web.get(f"/account/integrations/missing/backfills/{bid}.json").status_code == 404
    # The page lets its script fetch from this origin (the pages' policy allows no other).
    page = web.get(f"/account/integrations/{iid}")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # A worker runs it to the end: the JSON says so in words, the page stops polling.
    worker = Backfiller.build(bs, r)
    worker.poll_first_s, worker.poll_max_s = 0.01, 0.05
    try:
        assert worker.run(iid, bid, wait_inline=True)["state"] == "done"
    finally:
        worker.close()
    done = web.get(url).json()
    assert (done["state"], done["label"], done["level"], done["finished"]) == (
        "done",
        "Done",
        "ok",
        True,
    )
    assert (done["windows_done"], done["windows_total"]) == (1, 1)
    assert done["text"] == f"All 1 report imported: {done['chats_counted']:,} solved chats."
    assert done["chats_counted"] == len(fc.script.rows)
    page_text = page_of(web, iid)
    row = page_text[page_text.index(f'id="import-{bid}"') :]
    row = row[: row.index("</tr>")]
    assert "data-poll" not in row and "Cancel" not in row
    assert 'value="1"' in row and ">Done<" in row


def test_cancel_in_the_page(web: TestClient, bs: Settings, r: redis.Redis) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    created = Backfills(r, bs).create(iid, {"from": days_ago(7), "to": days_ago(1)})
    bid = created["backfill_id"]
    page = page_of(web, iid)
    row = page[page.index(f'id="import-{bid}"') :]
    action = f"/account/integrations/{iid}/backfills/{bid}/cancel"
    assert f'action="{action}?#history"' in row[:3000]
    assert web.post(action, data={}).status_code == 403  # no CSRF token
    assert Backfills(r, bs).get(iid, bid)["state"] == "queued"
    after = post_to_section(web, action, {"csrf": csrf})
    assert "The import was cancelled." in after
    row = after[after.index(f'id="import-{bid}"') :]
    row = row[: row.index("</tr>")]
    assert (
        ">Cancelled<" in row and "Cancelled after 0 of 1 report" in row and "data-poll" not in row
    )
    assert Backfills(r, bs).get(iid, bid)["state"] == "cancelled"
    page = post_to_section(
        web, f"/account/integrations/{iid}/backfills/nope/cancel", {"csrf": csrf}
    )
    assert "There is no such import." in page
    gone = web.post(f"/account/integrations/missing/backfills/{bid}/cancel", data={"csrf": csrf})
    assert gone.status_code == 303 and gone.headers["location"] == "/account/integrations"
    # A deleted integration shows its imports but offers no new one.
    assert web.delete(f"/v1/integrations/{iid}", headers=ADMIN).status_code == 204
    page = page_of(web, iid)
    assert f'id="import-{bid}"' in page and 'id="history-form"' not in page
