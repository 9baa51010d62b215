"""The page's actions without a browser: every POST answers 303 to a GET page (a reload
repeats nothing), edit with Freshchat's check, delete after a confirmation page."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import orjson
import pytest
import redis
from cryptography.fernet import Fernet
from starlette.testclient import TestClient

from app.admin.session import SESSION_COOKIE
from app.main import create_app
from app.redis_keys import RedisKeys
from tests.freshchat_standin import FreshchatStandIn, running
from tests.page_support import FORM, hidden_csrf, saved_integration, sign_in
from tests.redis_server import RedisServer, free_port
from tests.support import ADMIN, ADMIN_TOKEN, ENCRYPTION_KEY, make_settings

GOOD = "fc-good-key"
URL = "redis://127.0.0.1:1/0"  # settings only for key names


@pytest.fixture
def standin() -> Iterator[FreshchatStandIn]:
    """A Freshchat stand-in accepting `fc-good-key`."""
    with running() as server:
        yield server


@pytest.fixture
def web(redis_server: RedisServer, r: redis.Redis) -> Iterator[TestClient]:
    """The app with insecure Freshchat hosts allowed (the stand-in is plain http)."""
    settings = make_settings(redis_server.url, freshchat_allow_insecure=True)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def post_303(web: TestClient, url: str, data: dict[str, str], expect: str | None = None) -> str:
    """POST a form: it must answer 303 to a page that GET then shows (200); returns the
    page's text, unescaped."""
    response = web.post(url, data=data)
    assert response.status_code == 303, (url, response.status_code, response.text)
    location = response.headers["location"]
    if expect is not None:
        assert location == expect
    page = web.get(location)
    assert page.status_code == 200, (location, page.status_code)
    return html.unescape(page.text)


def stored(r: redis.Redis, iid: str) -> dict[str, object]:
    """The stored record of an integration."""
    raw = r.hget(RedisKeys(make_settings(URL).key_prefix).integrations(), iid)
    found: dict[str, object] = orjson.loads(raw or b"{}")
    return found


def stored_key(r: redis.Redis, iid: str) -> str:
    """The Freshchat API key stored (encrypted) for an integration."""
    return Fernet(ENCRYPTION_KEY).decrypt(str(stored(r, iid)["freshchat_api_key_enc"])).decode()


def edit_form(csrf: str, name: str, domain: str, key: str = "") -> dict[str, str]:
    """The edit form's fields."""
    return {"csrf": csrf, "name": name, "freshchat_domain": domain, "freshchat_api_key": key}


def test_every_page_post_answers_303_to_a_get_page(
    web: TestClient, standin: FreshchatStandIn
) -> None:
    form = web.get("/signin")
    post_303(web, "/signin", {"token": "wrong", "csrf": hidden_csrf(form.text)})
    form = web.get("/signin")
    post_303(web, "/signin", {"token": ADMIN_TOKEN, "csrf": hidden_csrf(form.text)})
    csrf = hidden_csrf(web.get("/account/integrations").text)
    fields = {"csrf": csrf, "name": "Acme", "freshchat_domain": standin.domain}
    post_303(web, FORM, {**fields, "freshchat_api_key": "wrong-key"}, FORM)
    response = web.post(FORM, data={**fields, "freshchat_api_key": GOOD})
    assert response.status_code == 303
    iid = response.headers["location"].split("/")[-1].split("#")[0]
    base = f"/account/integrations/{iid}"
    post_303(web, f"{base}/keys", {"csrf": csrf}, f"{base}#install")
    [key] = web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    post_303(web, f"{base}/keys/{key['key_id']}/revoke", {"csrf": csrf}, f"{base}#install")
    post_303(web, f"{base}/edit", edit_form(csrf, "", standin.domain), f"{base}/edit")
    post_303(web, f"{base}/edit", edit_form(csrf, "Acme 2", standin.domain), base)
    post_303(web, f"{base}/delete", {"csrf": csrf}, "/account/integrations")
    post_303(web, "/signout", {"csrf": csrf}, "/signin")


def test_action_urls_answer_get_with_their_page_not_405(web: TestClient) -> None:
    sign_in(web)
    iid = saved_integration(web)
    base = f"/account/integrations/{iid}"
    for action in (f"{base}/keys", f"{base}/keys/nokey/revoke"):
        response = web.get(action + "?day=2026-11-20")
        assert response.status_code == 303
        assert response.headers["location"] == f"{base}?day=2026-11-20#install"
    assert web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"] == []
    assert web.get("/signout").headers["location"] == "/account/integrations"
    assert web.get("/account/integrations").status_code == 200  # still signed in


def test_a_post_about_something_gone_still_answers_303(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    gone = "/account/integrations/nosuchid00"
    for action in (f"{gone}/keys", f"{gone}/edit", f"{gone}/delete"):
        text = post_303(web, action, {"csrf": csrf}, "/account/integrations")
        assert "There is no such integration." in text
    text = post_303(web, f"/account/integrations/{iid}/keys/nokey/revoke", {"csrf": csrf})
    assert "There is no such injixo API key." in text
    assert web.get(f"{gone}/edit").status_code == 404  # a GET of it is plainly not there


def test_generate_then_reload_adds_no_key_and_keeps_the_day(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    view = "day=2026-11-20&interval=30&tz=Europe%2FBerlin"
    page = web.get(f"/account/integrations/{iid}?{view}").text
    assert f'action="/account/integrations/{iid}/keys?{view}#install"' in html.unescape(page)
    posted = web.post(f"/account/integrations/{iid}/keys?{view}", data={"csrf": csrf})
    assert posted.headers["location"] == f"/account/integrations/{iid}?{view}#install"
    shown = web.get(posted.headers["location"]).text
    assert 'id="new-key"' in shown and 'value="2026-11-20"' in shown
    assert 'value="Europe/Berlin"' in shown
    again = web.get(posted.headers["location"])
    assert again.status_code == 200 and 'id="new-key"' not in again.text
    assert len(web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]) == 1


def test_edit_checks_a_new_key_or_domain_with_freshchat_as_on_save(
    web: TestClient, standin: FreshchatStandIn, r: redis.Redis
) -> None:
    csrf = sign_in(web)
    created = web.post(
        "/v1/integrations",
        headers=ADMIN,
        json={"name": "Acme", "freshchat_domain": standin.domain, "freshchat_api_key": GOOD},
    )
    iid = created.json()["id"]
    edit = f"/account/integrations/{iid}/edit"
    page = html.unescape(web.get(edit + "?day=2026-11-20").text)
    assert 'value="Acme"' in page and f'value="{standin.domain}"' in page
    assert f'action="{edit}?day=2026-11-20"' in page
    assert GOOD not in page  # the stored key is never shown

    standin.clear_requests()
    text = post_303(web, edit, edit_form(csrf, "Acme Chat", standin.domain))
    assert "The integration was updated." in text and "Acme Chat" in text
    assert standin.requests == []  # a rename alone asks nothing of Freshchat

    text = post_303(web, edit, edit_form(csrf, "Acme Chat", standin.domain, "rotated-wrong"), edit)
    assert 'id="freshchat_api_key-error"' in text and "rejected the API key" in text
    assert 'value="Acme Chat"' in text and "rotated-wrong" not in text
    assert stored_key(r, iid) == GOOD

    standin.script.valid_keys.add("fc-rotated-key")
    text = post_303(web, edit, edit_form(csrf, "Acme Chat", standin.domain, "fc-rotated-key"))
    assert "The integration was updated." in text
    assert stored_key(r, iid) == "fc-rotated-key"
    assert "fc-rotated-key" not in text

    closed = f"http://127.0.0.1:{free_port()}"
    text = post_303(web, edit, edit_form(csrf, "Acme Chat", closed), edit)
    assert 'id="freshchat_domain-error"' in text and "could not reach freshchat" in text.lower()
    assert f'value="{closed}"' in text  # what was typed stays
    assert stored(r, iid)["freshchat_domain"] == standin.domain


def test_edit_errors_are_inline_and_keep_what_was_typed(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)  # "Acme <b>"
    web.post(
        "/v1/integrations",
        headers=ADMIN,
        json={
            "name": "Other",
            "freshchat_domain": "o.freshchat.com",
            "freshchat_api_key": "k",
            "verify": False,
        },
    )
    edit = f"/account/integrations/{iid}/edit"
    text = post_303(web, edit, edit_form(csrf, "other", "acme.freshchat.com"), edit)
    assert "already exists" in text and 'id="name-error"' in text and 'value="other"' in text
    text = post_303(web, edit, edit_form(csrf, "Acme", "not a domain", "secret-typed"), edit)
    assert "is not a Freshchat domain" in text and 'value="not a domain"' in text
    assert "secret-typed" not in text
    assert web.get(edit).text.count("field-error") == 0  # shown once, then the record again
    nothing = post_303(web, edit, edit_form(csrf, "Acme <b>", "acme.freshchat.com"))
    assert "Nothing was changed." in nothing


def test_delete_asks_on_a_page_then_revokes_keys_and_says_so_once(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    key = web.post(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()
    detail = web.get(f"/account/integrations/{iid}?day=2026-11-20").text
    delete = f"/account/integrations/{iid}/delete"
    assert f'href="{delete}?day=2026-11-20"' in detail
    confirm = web.get(f"{delete}?day=2026-11-20")
    assert confirm.status_code == 200
    assert "Delete Acme &lt;b&gt;?" in confirm.text and "cannot be undone" in confirm.text
    assert f'action="{delete}?day=2026-11-20"' in html.unescape(confirm.text)
    assert web.get(f"/v1/integrations/{iid}", headers=ADMIN).json()["status"] == "active"

    text = post_303(web, delete, {"csrf": csrf}, "/account/integrations")
    assert "The integration Acme <b> was deleted" in text
    assert "The integration Acme <b> was deleted" not in web.get("/account/integrations").text
    assert web.get(f"/v1/integrations/{iid}", headers=ADMIN).json()["status"] == "deleted"
    [meta] = web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    assert meta["key_id"] == key["key_id"] and meta["revoked_at"] is not None
    # A deleted integration has nothing left to edit or delete.
    gone = web.get(f"/account/integrations/{iid}")
    assert 'id="delete-link"' not in gone.text and 'id="edit-link"' not in gone.text
    for path in (delete, f"/account/integrations/{iid}/edit"):
        answer = web.get(path)
        assert answer.status_code == 303
        assert "is deleted" in web.get(answer.headers["location"]).text


def test_edit_and_delete_need_the_session_csrf_and_this_origin(web: TestClient) -> None:
    iid = saved_integration(web)
    delete, edit = f"/account/integrations/{iid}/delete", f"/account/integrations/{iid}/edit"
    assert web.get(delete).headers["location"].startswith("/signin?next=")
    csrf = sign_in(web)
    assert web.post(delete, data={}).status_code == 403
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of this host
        {"Referer": "http://127.0.0.1:1/attack.html"},
    ):
        assert web.post(delete, data={"csrf": csrf}, headers=headers).status_code == 403
        refused = web.post(
            edit, data=edit_form(csrf, "Renamed", "a.freshchat.com"), headers=headers
        )
        assert refused.status_code == 403
    assert web.get(f"/v1/integrations/{iid}", headers=ADMIN).json()["status"] == "active"
    assert web.get(f"/v1/integrations/{iid}", headers=ADMIN).json()["name"] == "Acme <b>"
    same = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    assert web.post(delete, data={"csrf": csrf}, headers=same).status_code == 303


def test_no_page_uses_internal_words(web: TestClient) -> None:
    sign_in(web)
    iid = saved_integration(web)
    base = f"/account/integrations/{iid}"
    for path in ("/account/integrations", base, f"{base}/edit", f"{base}/delete", FORM):
        text = web.get(path).text.lower()
        assert "shard" not in text, path
    assert re.search(r'href="/rq/"', web.get(base).text)  # the dashboard, from every page
    assert SESSION_COOKIE in web.cookies


def test_flash_cookies_are_encrypted_scoped_and_short_lived(web: TestClient) -> None:
    csrf = sign_in(web)
    response = web.post(FORM, data={"csrf": csrf, "name": "Visible Name", "freshchat_domain": ""})
    header = response.headers["set-cookie"]
    assert "Visible Name" not in header and "Visible" not in header
    assert f"Path={FORM}" in header and "HttpOnly" in header and "Max-Age=120" in header
    assert "SameSite=strict" in header
