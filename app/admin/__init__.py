"""The admin web page (§7): integrations list, add form, keys, status and counts.

The page follows the help-center article step by step: *Account > Integrations* →
*Add integration* → **Freshworks** tile → **Freshchat** section → form → *Save
integration* → **Install the injixo app** (generate, copy and revoke injixo API keys).

Modules: `session` (signed cookie, CSRF, origin), `page` (templates, headers, guards),
`signin`, `pages` (list and add flow), `detail` (one integration), `status` (its
badge), `chart` (pure SVG geometry).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.admin.detail import get_integration, post_new_key, post_revoke_key
from app.admin.page import APP_DIR
from app.admin.pages import (
    add_freshchat_form,
    get_add_freshworks,
    get_add_models,
    get_home,
    get_integrations,
)
from app.admin.session import session_check
from app.admin.signin import post_signout, signin_page

__all__ = ["PAGE_ROUTES", "session_check"]

PAGE_ROUTES: list[BaseRoute] = [
    Route("/", get_home, methods=["GET"]),
    Route("/signin", signin_page, methods=["GET", "POST"]),
    Route("/signout", post_signout, methods=["POST"]),
    Route("/account/integrations", get_integrations, methods=["GET"]),
    Route("/account/integrations/new", get_add_models, methods=["GET"]),
    Route("/account/integrations/new/freshworks", get_add_freshworks, methods=["GET"]),
    Route(
        "/account/integrations/new/freshworks/freshchat",
        add_freshchat_form,
        methods=["GET", "POST"],
    ),
    Route("/account/integrations/{iid}", get_integration, methods=["GET"]),
    Route("/account/integrations/{iid}/keys", post_new_key, methods=["POST"]),
    Route("/account/integrations/{iid}/keys/{key_id}/revoke", post_revoke_key, methods=["POST"]),
    Mount("/static", app=StaticFiles(directory=APP_DIR / "static"), name="static"),
]
