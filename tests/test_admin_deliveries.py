"""The page's status (state, reason, fix; stuck made prominent), the injixo app's install
shown where the customer installs it, the deliveries log with its search and paging, and
one chat explained (or a friendly page saying what to check when it is unknown)."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
from starlette.testclient import TestClient

from app.admin.deliveries import PAGE_SIZE
from app.main import create_app
from app.settings import Settings
from tests.page_support import sign_in
from tests.redis_server import RedisServer
from tests.support import (
    ADMIN,
    G1,
    apply_all,
    at,
    conv_event,
    create_integration,
    make_settings,
    post_events,
    shard_of,
    wait_until,
)

T = at("2026-11-23T08:07")
DASH = "\u2013"


@pytest.fixture
def settings(redis_server: RedisServer, r: redis.Redis) -> Settings:
    """Events pending longer than a second with no worker make an integration stuck."""
    return make_settings(redis_server.url, stuck_after_seconds=1)


@pytest.fixture
def web(settings: Settings) -> Iterator[TestClient]:
    """The app in-process, signed in; redirects are not followed."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        sign_in(client)
        yield client


def page_of(web: TestClient, path: str, status: int = 200) -> str:
    """A page's HTML, after checking its status and that it names nothing internal."""
    response = web.get(path)
    assert response.status_code == status, (path, response.status_code, response.text)
    assert "shard" not in response.text.lower()
    return response.text


def element(page: str, element_id: str) -> str:
    """The unescaped text of the element with this id (tags removed, spaces squeezed)."""
    found = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', page, re.DOTALL)
    assert found, f"no #{element_id} in the page"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(2))).split())


def chat_links(page: str) -> list[str]:
    """The hrefs of the conversation ids in a deliveries table, in order."""
    return [html.unescape(h) for h in re.findall(r'<a href="([^"]+)" class="mono"', page)]


# --- status -----------------------------------------------------------------------------------


def test_stuck_integration_shows_its_reason_and_fix_prominently(web: TestClient) -> None:
    iid, key = create_integration(web)
    page = page_of(web, f"/account/integrations/{iid}")
    assert 'data-state="waiting_for_first_event"' in page
    assert "Install the injixo app in Freshchat" in element(page, "state-fix")
    assert 'id="stuck-alert"' not in page
    chat = str(uuid.uuid4())
    assert post_events(web, key, conv_event(chat, "resolved", T, G1)).status_code == 202
    time.sleep(1.2)  # pending past STUCK_AFTER_SECONDS, and no worker runs
    page = page_of(web, f"/account/integrations/{iid}")
    assert 'data-state="stuck"' in page
    alert = element(page, "stuck-alert")
    assert "stuck" in alert and "No worker is running: 1 event waits to be counted" in alert
    assert "What to do: Start a worker (`injixo-freshchat worker`)" in alert
    assert "No worker is running" in element(page, "state-reason")
    assert "Start a worker" in element(page, "state-fix")
    assert '<dd id="pending">1</dd>' in page
    listed = page_of(web, "/account/integrations")
    assert 'class="badge stuck" data-state="stuck">Stuck: events wait</span>' in listed
    assert "No worker is running" in listed and "Start a worker" in listed


def test_waiting_integration_is_not_stuck_and_receiving_has_no_fix(
    web: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(web)
    assert post_events(web, key, conv_event(str(uuid.uuid4()), "resolved", T, G1)).status_code
    apply_all(r, settings, shard_of(r, settings, iid))
    time.sleep(1.2)
    page = page_of(web, f"/account/integrations/{iid}")
    assert 'id="health" data-state="receiving">Receiving events</span>' in page
    assert 'id="stuck-alert"' not in page and 'id="state-fix"' not in page
    assert '<dd id="pending">0</dd>' in page


def test_app_install_is_shown_in_the_install_section_and_uninstall_flags(web: TestClient) -> None:
    iid, key = create_integration(web)
    page = page_of(web, f"/account/integrations/{iid}")
    assert 'id="app-installed"' not in page and 'id="app-uninstalled"' not in page
    installed = post_events(web, key, {"event": "onAppInstall", "data": {}})
    assert installed.status_code == 202
    page = page_of(web, f"/account/integrations/{iid}")
    install = page[page.index('id="install"') :]
    said = element(install, "app-installed")
    assert said.startswith("injixo app installed at 20") and "UTC" in said
    stamped = r'id="app-installed">injixo app installed at <time datetime="[\d-]{10}T[\d:]{8}Z"'
    assert re.search(stamped, page)
    assert 'data-state="receiving"' in page  # the app reached us: the connection works
    time.sleep(1.1)
    assert post_events(web, key, {"event": "onAppUninstall", "data": {}}).status_code == 202
    page = page_of(web, f"/account/integrations/{iid}")
    install = page[page.index('id="install"') :]
    notice = element(install, "app-uninstalled")
    assert "The injixo app was uninstalled from Freshchat at 20" in notice
    assert 'id="app-installed"' not in page
    assert 'data-state="app_uninstalled">App uninstalled</span>' in page
    assert "Install the injixo app again" in element(page, "state-fix")
    assert 'data-state="app_uninstalled">App uninstalled' in page_of(web, "/account/integrations")


# --- the deliveries log -----------------------------------------------------------------------


def test_deliveries_log_lists_what_was_sent_and_finds_one_chat(web: TestClient) -> None:
    iid, key = create_integration(web)
    page = page_of(web, f"/account/integrations/{iid}")
    assert 'id="no-deliveries"' in page
    assert f'href="/account/integrations/{iid}/deliveries"' in page
    chats = [str(uuid.uuid4()) for _ in range(3)]
    post_events(web, key, conv_event(chats[0], "assigned", T, G1, event="onConversationCreate"))
    post_events(web, key, [conv_event(chats[1], "resolved", T, G1), {"event": "onMessageCreate"}])
    post_events(web, key, conv_event(chats[2], "spam", T, None))
    bad = conv_event(chats[0], "resolved", T, G1)
    bad["timestamp"] = "yesterday"
    assert post_events(web, key, bad).status_code == 400

    def logged() -> bool:
        found = web.get(f"/v1/integrations/{iid}/deliveries", headers=ADMIN).json()
        return len(found["deliveries"]) == 4

    wait_until(logged, 5, "the rejected request in the log")
    log = page_of(web, f"/account/integrations/{iid}/deliveries")
    text = html.unescape(log)
    # Newest first, each conversation id linking to its explanation.
    assert chat_links(log) == [f"/account/integrations/{iid}/chats/{c}" for c in chats[::-1]]
    assert "Rejected: not a valid request" in text and "nothing stored" in text
    assert "1 accepted, 1 ignored" in text
    for words in ("Conversation created", "Conversation updated", "Solved", "Deleted or spam"):
        assert words in text
    assert "Other change" in text and "Customer Support" in text and "No group" in text
    assert "2026-11-23 08:07:00" in text and "Times in UTC." in text
    # The integration page shows the latest requests and a search that lands here.
    page = page_of(web, f"/account/integrations/{iid}")
    assert len(re.findall(r"<tr>\s*<td><time", page)) == 4
    assert 'action="/account/integrations/' in page and 'name="conversation_id"' in page
    # The search finds one chat: only the requests naming it, and a link to explain it.
    found = page_of(web, f"/account/integrations/{iid}/deliveries?conversation_id={chats[1]}")
    assert chat_links(found) == [f"/account/integrations/{iid}/chats/{chats[1]}"]
    assert chats[0] not in found and chats[2] not in found
    assert f'value="{chats[1]}"' in found
    assert 'id="explain-link"' in found
    missing = page_of(web, f"/account/integrations/{iid}/deliveries?conversation_id=nope")
    assert "No kept request names the conversation" in html.unescape(missing)
    too_long = page_of(web, f"/account/integrations/{iid}/deliveries?conversation_id={'x' * 300}")
    assert 'id="search-error"' in too_long


def test_deliveries_log_pages_with_before(web: TestClient) -> None:
    iid, key = create_integration(web)
    chats = [f"chat-{n:03d}" for n in range(PAGE_SIZE + 3)]
    for chat in chats:
        assert post_events(web, key, conv_event(chat, "assigned", T, G1)).status_code == 202
    first = page_of(web, f"/account/integrations/{iid}/deliveries?day=2026-11-23&tz=UTC")
    newest = [link.split("/chats/")[1].split("?")[0] for link in chat_links(first)]
    assert newest == chats[::-1][:PAGE_SIZE]
    assert 'id="newest"' not in first
    older = re.search(r'href="([^"]+)" id="older"', first)
    assert older
    second = page_of(web, html.unescape(older.group(1)))
    rest = [link.split("/chats/")[1].split("?")[0] for link in chat_links(second)]
    assert rest == chats[::-1][PAGE_SIZE:]
    assert 'id="older"' not in second and 'id="newest"' in second
    # The integration page's day and zone travel along, back and to the explanations.
    assert "day=2026-11-23" in html.unescape(older.group(1))
    assert all("day=2026-11-23&tz=UTC" in link for link in chat_links(second))
    assert f'href="/account/integrations/{iid}?day=2026-11-23&amp;tz=UTC#deliveries"' in second
    mangled = page_of(web, f"/account/integrations/{iid}/deliveries?before=<x>")
    assert len(chat_links(mangled)) == PAGE_SIZE  # the newest, not an error


# --- one chat explained -----------------------------------------------------------------------


def test_explanation_shows_counted_kind_time_interval_queue_and_why(
    web: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(web)
    solved, still_open = str(uuid.uuid4()), str(uuid.uuid4())
    post_events(web, key, conv_event(solved, "assigned", at("2026-11-23T08:02"), G1))
    post_events(web, key, conv_event(solved, "resolved", T, G1))
    post_events(web, key, conv_event(still_open, "assigned", T, G1))
    apply_all(r, settings, shard_of(r, settings, iid))
    log = page_of(web, f"/account/integrations/{iid}/deliveries?conversation_id={solved}")
    assert len(chat_links(log)) == 2
    page = page_of(web, chat_links(log)[0])
    assert element(page, "chat-counted") == "Yes, as one contact"
    assert element(page, "chat-kind") == "Solved"
    assert element(page, "chat-time") == "2026-11-23 08:07:00 UTC"
    assert element(page, "chat-interval") == f"2026-11-23 08:00{DASH}08:15 UTC"
    assert element(page, "chat-queue") == "Customer Support"
    why = element(page, "chat-why")
    assert "Counted in Customer Support" in why
    assert "the event named the chat's Freshchat group" in why
    assert "group_name_in_event" in why
    assert page.count('<tbody class="delivery"') == 2  # the deliveries that mention it
    # In the zone the integration page carries.
    kolkata = page_of(web, f"/account/integrations/{iid}/chats/{solved}?tz=Asia/Kolkata")
    assert element(kolkata, "chat-interval") == f"2026-11-23 13:30{DASH}13:45 Asia/Kolkata"
    assert element(kolkata, "chat-time") == "2026-11-23 13:37:00 Asia/Kolkata"
    # Not solved yet: not counted, and why.
    waiting = page_of(web, f"/account/integrations/{iid}/chats/{still_open}")
    assert element(waiting, "chat-counted") == "No"
    assert "not_terminal_yet" in element(waiting, "chat-why")
    assert 'id="chat-queue"' not in waiting


def test_unknown_chat_is_a_friendly_not_found_page(web: TestClient) -> None:
    iid, _ = create_integration(web)
    chat = str(uuid.uuid4())
    page = page_of(web, f"/account/integrations/{iid}/chats/{chat}", 404)
    assert "Chat not found" in page and "What to check" in page
    assert f"No chat {chat} is known in Acme." == element(page, "chat-unknown")
    assert f'href="/account/integrations/{iid}/deliveries"' in page
    assert "remembered for 90 days" in page
    long_id = page_of(web, f"/account/integrations/{iid}/chats/{'x' * 300}", 404)
    assert "at most 256 characters" in long_id
    assert web.get("/account/integrations/nosuchid00/chats/x").status_code == 404
    assert web.get("/account/integrations/nosuchid00/deliveries").status_code == 404
    assert web.get(f"/account/integrations/{iid}/chats/").status_code == 303


def test_hostile_ids_and_group_names_stay_text(
    web: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(web, name='<img src=x onerror="alert(1)">')
    chat = '<script>alert("id")</script>/../?#x'
    dots = ".."
    group = ("g<1>", '<b onmouseover="alert(2)">Sales</b>')
    post_events(web, key, conv_event(chat, "resolved", T, group))
    post_events(web, key, conv_event(dots, "resolved", T, group))
    apply_all(r, settings, shard_of(r, settings, iid))
    log = page_of(web, f"/account/integrations/{iid}/deliveries")
    for raw in ("<script>", "<img src", "<b onmouseover", "g<1>"):
        assert raw not in log
    assert "&lt;script&gt;alert(&#34;id&#34;)&lt;/script&gt;/../?#x" in log
    assert "&lt;b onmouseover=&#34;alert(2)&#34;&gt;Sales&lt;/b&gt;" in log
    links = chat_links(log)
    assert links == [
        f"/account/integrations/{iid}/chats?conversation_id=..",
        f"/account/integrations/{iid}/chats/{quote(chat, safe='')}",
    ]
    for link, conversation in zip(links, (dots, chat), strict=True):
        page = page_of(web, link)
        assert "<script>" not in page and "<b onmouseover" not in page
        assert element(page, "chat-queue") == group[1]
        assert html.unescape(re.search(r'class="mono chat-id">([^<]*)<', page).group(1)) == (  # type: ignore[union-attr]
            conversation
        )
    search = page_of(web, f"/account/integrations/{iid}/deliveries?conversation_id={quote(chat)}")
    assert len(chat_links(search)) == 1 and "<script>" not in search
    unknown = page_of(web, f"/account/integrations/{iid}/chats/{quote('<i>x</i>', safe='')}", 404)
    assert "<i>x</i>" not in unknown and "&lt;i&gt;x&lt;/i&gt;" in unknown


def test_the_pages_need_a_session(settings: Settings) -> None:
    with TestClient(create_app(settings), follow_redirects=False) as anonymous:
        for path in ("/account/integrations/x/deliveries", "/account/integrations/x/chats/y"):
            answer = anonymous.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/signin?next=")
