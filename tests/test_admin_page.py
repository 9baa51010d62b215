"""The admin web page without a browser: sign-in, CSRF, the add form's inline errors, keys."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from app.activity import Activity, read_activity
from app.admin.session import (
    SESSION_COOKIE,
    SESSION_TTL_SECONDS,
    csrf_token,
    new_session,
    safe_next,
    session_valid,
)
from app.integration import Integration, Status
from app.main import create_app
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.page_support import FORM, hidden_csrf, saved_integration, sign_in
from tests.redis_server import RedisServer, free_port
from tests.support import ADMIN, ADMIN_TOKEN, make_settings


@pytest.fixture
def page_settings(redis_server: RedisServer, r: redis.Redis) -> Settings:
    """Insecure Freshchat hosts allowed, so a closed local port can stand for 'unreachable'."""
    return make_settings(redis_server.url, freshchat_allow_insecure=True)


@pytest.fixture
def web(page_settings: Settings) -> Iterator[TestClient]:
    """The app in-process; redirects are not followed so each step can be checked."""
    with TestClient(create_app(page_settings), follow_redirects=False) as test_client:
        yield test_client


def submit(web: TestClient, csrf: str, name: str, domain: str, key: str) -> str:
    """Post the add form; it answers 303 back to the form, whose text (unescaped) this
    returns after the form's status."""
    response = web.post(
        FORM,
        data={"csrf": csrf, "name": name, "freshchat_domain": domain, "freshchat_api_key": key},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == FORM
    again = web.get(FORM)
    return f"{again.status_code}\n{html.unescape(again.text)}"


def test_root_redirects_to_the_list_and_pages_need_a_session(web: TestClient) -> None:
    assert web.get("/").headers["location"] == "/account/integrations"
    for path in ("/account/integrations", "/account/integrations/new", FORM):
        response = web.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/signin?next=")
    post = web.post(FORM, data={"name": "x"})
    assert post.status_code == 303
    assert post.headers["location"].startswith("/signin")


def test_static_files_need_no_session(web: TestClient) -> None:
    assert web.get("/static/admin.css").status_code == 200
    assert web.get("/static/admin.js").status_code == 200


def test_wrong_token_is_rejected_and_sets_no_session(web: TestClient) -> None:
    form = web.get("/signin")
    response = web.post("/signin", data={"token": "not-the-token", "csrf": hidden_csrf(form.text)})
    assert response.status_code == 303
    assert SESSION_COOKIE not in response.cookies
    assert response.headers["location"] == "/signin?next=%2Faccount%2Fintegrations"
    again = web.get(response.headers["location"])
    assert again.status_code == 200 and "not the admin token" in again.text
    assert "not the admin token" not in web.get("/signin").text  # said once
    assert web.get("/account/integrations").status_code == 303


def test_session_cookie_is_signed_httponly_strict_and_not_the_token(web: TestClient) -> None:
    form = web.get("/signin")
    response = web.post("/signin", data={"token": ADMIN_TOKEN, "csrf": hidden_csrf(form.text)})
    header = response.headers["set-cookie"]
    assert "httponly" in header.lower()
    assert "samesite=strict" in header.lower()
    assert "secure" not in header.lower()  # plain http here
    assert ADMIN_TOKEN not in header
    assert web.get("/account/integrations").status_code == 200


def test_forged_or_expired_sessions_are_refused(page_settings: Settings) -> None:
    good = new_session(page_settings)
    assert session_valid(page_settings, good)
    issued, signature = good.split(".")
    assert not session_valid(page_settings, f"{int(issued) + 1}.{signature}")
    assert not session_valid(page_settings, good, now=time.time() + 13 * 3600)
    assert not session_valid(page_settings, "garbage")
    other = make_settings(page_settings.redis_url, admin_token="another-admin-token-123456")
    assert not session_valid(other, good)


def test_signin_form_needs_its_csrf_token(web: TestClient) -> None:
    web.get("/signin")
    response = web.post("/signin", data={"token": ADMIN_TOKEN, "csrf": "forged"})
    assert response.status_code == 403


def test_signin_redirects_back_only_to_local_paths(web: TestClient) -> None:
    form = web.get("/signin?next=//evil.example/x")
    response = web.post(
        "/signin",
        data={"token": ADMIN_TOKEN, "csrf": hidden_csrf(form.text), "next": "https://evil.example"},
    )
    assert response.headers["location"] == "/account/integrations"
    assert safe_next("/\t/evil.example") == "/account/integrations"
    assert safe_next("/\\evil.example") == "/account/integrations"
    assert safe_next("/account/integrations/abc?day=2026-11-20") == (
        "/account/integrations/abc?day=2026-11-20"
    )


def test_post_without_or_with_wrong_csrf_is_forbidden(web: TestClient) -> None:
    csrf = sign_in(web)
    body = {"name": "Acme", "freshchat_domain": "acme.freshchat.com", "freshchat_api_key": "k"}
    assert web.post(FORM, data=body).status_code == 403
    assert web.post(FORM, data={**body, "csrf": "0" * 64}).status_code == 403
    assert web.post("/signout", data={}).status_code == 403
    # Right token, but sent from another site.
    cross = web.post(FORM, data={**body, "csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    listed = web.get("/v1/integrations", headers=ADMIN).json()["integrations"]
    assert listed == []


def test_oversized_forms_are_refused_before_parsing(web: TestClient) -> None:
    csrf = sign_in(web)
    huge = {"csrf": csrf, "name": "x" * 70_000}
    assert web.post(FORM, data=huge).status_code == 413
    assert web.post("/signin", data={"token": "x" * 70_000}).status_code == 413


def test_csrf_token_is_bound_to_the_session(page_settings: Settings) -> None:
    one, two = new_session(page_settings, 1_000), new_session(page_settings, 2_000)
    assert csrf_token(page_settings, one) != csrf_token(page_settings, two)


def test_signout_ends_the_session(web: TestClient) -> None:
    csrf = sign_in(web)
    response = web.post("/signout", data={"csrf": csrf}, headers={"Origin": "http://testserver"})
    assert response.status_code == 303
    assert web.get("/account/integrations").status_code == 303


def test_empty_list_shows_the_freshworks_tile_and_the_steps_lead_to_the_form(
    web: TestClient,
) -> None:
    sign_in(web)
    page = web.get("/account/integrations").text
    assert "Freshworks" in page and "Select model" in page
    assert "Account" in page and "Integrations" in page
    models = web.get("/account/integrations/new").text
    assert 'href="/account/integrations/new/freshworks"' in models
    section = web.get("/account/integrations/new/freshworks").text
    assert "Freshchat" in section and f'href="{FORM}"' in section
    form = web.get(FORM)
    assert 'placeholder="example.freshchat.com"' in form.text
    assert 'type="password"' in form.text and "Save integration" in form.text
    assert form.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in form.headers["content-security-policy"]


def test_bad_domain_is_an_inline_error_keeping_name_and_domain(web: TestClient) -> None:
    csrf = sign_in(web)
    text = submit(web, csrf, "Acme", "not a domain", "secret-freshchat-key-1")
    assert text.startswith("200")
    assert "is not a Freshchat domain" in text
    assert 'aria-describedby="freshchat_domain-hint freshchat_domain-error"' in text
    assert 'value="Acme"' in text and 'value="not a domain"' in text
    assert "secret-freshchat-key-1" not in text


def test_duplicate_name_is_an_inline_error(web: TestClient) -> None:
    csrf = sign_in(web)
    created = web.post(
        "/v1/integrations",
        headers=ADMIN,
        json={
            "name": "Acme",
            "freshchat_domain": "acme.freshchat.com",
            "freshchat_api_key": "k",
            "verify": False,
        },
    )
    assert created.status_code == 201
    text = submit(web, csrf, " acme ", "other.freshchat.com", "secret-freshchat-key-2")
    assert "already exists" in text
    assert 'id="name-error"' in text
    assert "secret-freshchat-key-2" not in text


def test_unreachable_freshchat_is_an_inline_error(web: TestClient) -> None:
    csrf = sign_in(web)
    closed = free_port()
    text = submit(web, csrf, "Acme", f"http://127.0.0.1:{closed}", "secret-freshchat-key-3")
    assert "could not reach freshchat" in text.lower()
    assert 'id="freshchat_domain-error"' in text
    assert web.get("/v1/integrations", headers=ADMIN).json()["integrations"] == []


def test_missing_fields_are_inline_errors(web: TestClient) -> None:
    csrf = sign_in(web)
    text = submit(web, csrf, "   ", "", "")
    for field in ("name", "freshchat_domain", "freshchat_api_key"):
        assert f'id="{field}-error"' in text


def test_generated_key_is_shown_once_with_no_store(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    page = web.get(f"/account/integrations/{iid}")
    assert "Install the injixo app" in page.text and "Acme &lt;b&gt;" in page.text
    posted = web.post(f"/account/integrations/{iid}/keys", data={"csrf": csrf})
    # Post/redirect/get: a reload of the page that shows the key generates no other.
    assert posted.status_code == 303
    assert posted.headers["location"] == f"/account/integrations/{iid}#install"
    response = web.get(posted.headers["location"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    found = re.search(r'id="new-key" type="text" readonly value="([^"]+)"', response.text)
    assert found
    key = found.group(1)
    assert key.startswith("ijx_")
    assert key not in posted.headers["set-cookie"]  # carried to that one view encrypted
    again = web.get(f"/account/integrations/{iid}")
    assert key not in again.text
    assert len(web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]) == 1
    assert key[:12] in again.text  # the visible prefix is listed
    # The key works for ingestion until it is revoked from the page.
    keys = web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    revoke = web.post(
        f"/account/integrations/{iid}/keys/{keys[0]['key_id']}/revoke", data={"csrf": csrf}
    )
    assert revoke.status_code == 303
    after = web.get(revoke.headers["location"])
    assert "was revoked" in after.text
    keys = web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    assert keys[0]["revoked_at"] is not None


def test_key_actions_need_csrf(web: TestClient) -> None:
    sign_in(web)
    iid = saved_integration(web)
    assert web.post(f"/account/integrations/{iid}/keys", data={}).status_code == 403
    keys = web.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    assert keys == []


def test_unknown_integration_is_a_404_page(web: TestClient) -> None:
    sign_in(web)
    assert web.get("/account/integrations/nosuchid00").status_code == 404


def test_counts_view_rejects_bad_input_inline(web: TestClient) -> None:
    sign_in(web)
    iid = saved_integration(web)
    bad_tz = web.get(f"/account/integrations/{iid}?day=2026-11-20&interval=30&tz=Mars/Olympus")
    assert bad_tz.status_code == 200
    assert "unknown time zone" in html.unescape(bad_tz.text).lower()
    bad_day = web.get(f"/account/integrations/{iid}?day=yesterday")
    assert "Choose a day" in bad_day.text
    empty = web.get(f"/account/integrations/{iid}?day=2026-11-20")
    assert "No contacts counted on 2026-11-20" in empty.text


def test_status_helpers_read_the_hashes(web: TestClient, r: redis.Redis) -> None:
    sign_in(web)
    iid = saved_integration(web)
    page = web.get("/account/integrations").text
    assert "never" in page
    r.hset("ifc:lastevent", iid, int(time.time()) - 60)
    r.hset("ifc:authfail", iid, 7)
    detail = web.get(f"/account/integrations/{iid}").text
    assert '<dd id="auth-failures">7</dd>' in detail
    assert '<dd id="last-event">never</dd>' not in detail
    assert "Receiving events" in detail


def test_activity_reader(page_settings: Settings) -> None:
    from redis.asyncio import Redis

    async def run() -> None:
        client = Redis.from_url(page_settings.redis_url)
        keys = RedisKeys(page_settings.key_prefix)
        try:
            assert await read_activity(client, keys) == {}
            await client.hset(keys.last_event(), mapping={"a": "1700000000", "b": "x"})
            await client.hset(keys.auth_failures(), "a", 3)
            found = await read_activity(client, keys)
            assert found == {"a": Activity(1700000000, 3, None)}
        finally:
            await client.aclose()

    asyncio.run(run())


def _integration(created_at: int, status: Status = Status.ACTIVE) -> Integration:
    return Integration(
        id="a",
        name="A",
        freshchat_domain="a.freshchat.com",
        created_at=created_at,
        status=status,
        shard=0,
        freshchat_api_key_enc="x",
    )


def test_rq_dashboard_accepts_the_page_session(client: TestClient, settings: Settings) -> None:
    assert client.get("/rq/").status_code == 401
    forged = f"{int(time.time())}.{'0' * 64}"
    expired = new_session(settings, now=time.time() - SESSION_TTL_SECONDS - 60)
    for value in (forged, expired, "garbage"):
        client.cookies.set(SESSION_COOKIE, value)
        assert client.get("/rq/").status_code == 401, value
    client.cookies.clear()
    sign_in(client)
    assert client.cookies.get(SESSION_COOKIE)
    dashboard = client.get("/rq/")
    assert dashboard.status_code == 200
    assert "RQ dashboard" in dashboard.text
    assert client.get("/rq/0/data/queues.json").status_code == 200
    client.cookies.clear()
    assert client.get("/rq/").status_code == 401


def test_rq_dashboard_serves_its_styles_and_scripts(client: TestClient) -> None:
    page = client.get("/rq/", headers=ADMIN)
    assets = re.findall(r'(?:href|src)="([^"]+\.(?:css|js))"', page.text)
    assert any(a.endswith("main.css") for a in assets), assets
    assert any("jquery" in a for a in assets), assets
    for asset in assets:
        answer = client.get(asset, headers=ADMIN)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 100, asset
