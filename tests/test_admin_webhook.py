"""The page's second way to connect (§12): paste Freshchat's public key, get the URL, replace
the key, give a new URL, stop accepting; every POST answers 303 to the page."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.page_support import saved_integration, sign_in
from tests.support import WEBHOOK_FIXTURES, post_webhook, webhook_event, webhook_key_pem

T = 1_795_420_800_000


@pytest.fixture
def web(settings: Settings) -> Iterator[TestClient]:
    """The app in-process; redirects are not followed so each step can be checked."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def _post(web: TestClient, url: str, data: dict[str, str]) -> str:
    """POST a form: 303 to the integration's webhook section; its page's text, unescaped."""
    response = web.post(url, data=data)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.endswith("#webhook")
    page = web.get(location)
    assert page.status_code == 200
    return html.unescape(page.text)


def _url_on(page: str) -> str:
    found = re.search(r'id="webhook-url" type="text" readonly value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_paste_the_key_get_the_url_replace_and_stop(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    base = f"/account/integrations/{iid}"
    first = html.unescape(web.get(base).text)
    assert "Option 2: Freshchat's own webhooks (no app needed)" in first
    assert 'id="webhook-url"' not in first
    # A key that is not one: the error and what was pasted, on the page, nothing stored.
    page = _post(web, f"{base}/webhook", {"csrf": csrf, "public_key": "not a key"})
    assert 'id="public_key-error"' in page and "not a valid RSA public key" in page
    assert ">not a key</textarea>" in page and 'aria-invalid="true"' in page
    assert 'id="webhook-url"' not in page
    # As copied from Freshchat's settings (one line, RSA PUBLIC KEY labels).
    copied = (WEBHOOK_FIXTURES / "test_public_key_as_copied.txt").read_text()
    page = _post(web, f"{base}/webhook", {"csrf": csrf, "public_key": copied})
    assert "Public key saved." in page
    url = _url_on(page)
    assert url.startswith("http://testserver/v1/freshchat/webhooks/")
    assert "08:1b:ac:d6:74:f6:82:e0" in page and "none yet" in page
    path = url.removeprefix("http://testserver")
    body = webhook_event("conversation_resolution", "c-1", T, "g1")
    assert post_webhook(web, path, body).status_code == 202
    assert "none yet" not in html.unescape(web.get(base).text)
    # A reload shows the URL, not the notice again.
    assert "Public key saved." not in html.unescape(web.get(base).text)
    # A new key keeps the URL; a new URL replaces it, the old one answers 404.
    page = _post(web, f"{base}/webhook", {"csrf": csrf, "public_key": webhook_key_pem()})
    assert _url_on(page) == url
    data = {"csrf": csrf, "public_key": webhook_key_pem(), "new_url": "1"}
    page = _post(web, f"{base}/webhook", data)
    assert "New webhook URL" in page and _url_on(page) != url
    assert post_webhook(web, path, body).status_code == 404
    page = _post(web, f"{base}/webhook/delete", {"csrf": csrf})
    assert "no longer accepted" in page and 'id="webhook-url"' not in page
    # Opened with GET, the action URLs lead to the section.
    assert web.get(f"{base}/webhook").headers["location"].endswith(f"{base}#webhook")


def test_webhook_forms_need_the_session_and_csrf(web: TestClient) -> None:
    csrf = sign_in(web)
    iid = saved_integration(web)
    refused = web.post(
        f"/account/integrations/{iid}/webhook", data={"csrf": "x", "public_key": webhook_key_pem()}
    )
    assert refused.status_code == 403
    web.cookies.clear()
    anonymous = web.post(
        f"/account/integrations/{iid}/webhook", data={"csrf": csrf, "public_key": "k"}
    )
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin")
