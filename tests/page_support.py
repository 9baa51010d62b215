"""Page-test support: signing in, the CSRF token of a page, an integration to show."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tests.support import ADMIN, ADMIN_TOKEN

FORM = "/account/integrations/new/freshworks/freshchat"


def hidden_csrf(text: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


def sign_in(web: TestClient) -> str:
    """Sign in with the admin token; returns the page CSRF token."""
    form = web.get("/signin")
    assert form.status_code == 200
    response = web.post(
        "/signin",
        data={"token": ADMIN_TOKEN, "csrf": hidden_csrf(form.text)},
        follow_redirects=False,  # also with the shared `client`, which follows them
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/account/integrations"
    page = web.get("/account/integrations")
    assert page.status_code == 200
    return hidden_csrf(page.text)


def saved_integration(web: TestClient) -> str:
    """An integration created through the API (no Freshchat check); returns its id."""
    created = web.post(
        "/v1/integrations",
        headers=ADMIN,
        json={
            "name": "Acme <b>",
            "freshchat_domain": "acme.freshchat.com",
            "freshchat_api_key": "k",
            "verify": False,
        },
    )
    iid: str = created.json()["id"]
    return iid
