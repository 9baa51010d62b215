"""The admin web page (§7): integrations list, add form, keys, status and counts.

The page follows the help-center article step by step: *Account > Integrations* →
*Add integration* → **Freshworks** tile → **Freshchat** section → form → *Save
integration* → **Install the injixo app** (generate, copy and revoke injixo API keys).

Every form answers 303 to a GET page (post/redirect/get), so a reload never repeats an
action; what the action has to say travels in `flash`.

Modules: `session` (signed cookie, CSRF, origin), `page` (templates, headers, guards),
`flash` (the message across a redirect), `signin`, `pages` (list and add flow), `detail`
(one integration and its keys), `manage` (edit, delete), `contacts` (a day's counts, CSV),
`deliveries` (what the app sent, and one chat explained), `status` (its badge), `states`
(the state in words), `chart` (pure SVG geometry).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.admin.backfill import backfill_json, cancel_backfill, start_backfill
from app.admin.contacts import get_contacts_csv
from app.admin.deliveries import get_chat, get_deliveries
from app.admin.detail import get_integration, new_key, revoke_key
from app.admin.manage import delete_integration, edit_integration
from app.admin.page import APP_DIR
from app.admin.pages import (
    add_freshchat_form,
    get_add_freshworks,
    get_add_models,
    get_home,
    get_integrations,
)
from app.admin.session import session_check
from app.admin.signin import signin_page, signout
from app.admin.webhook import delete_webhook, set_webhook

__all__ = ["PAGE_ROUTES", "session_check"]

PAGE_ROUTES: list[BaseRoute] = [
    Route("/", get_home, methods=["GET"]),
    Route("/signin", signin_page, methods=["GET", "POST"]),
    Route("/signout", signout, methods=["GET", "POST"]),
    Route("/account/integrations", get_integrations, methods=["GET"]),
    Route("/account/integrations/new", get_add_models, methods=["GET"]),
    Route("/account/integrations/new/freshworks", get_add_freshworks, methods=["GET"]),
    Route(
        "/account/integrations/new/freshworks/freshchat",
        add_freshchat_form,
        methods=["GET", "POST"],
    ),
    Route("/account/integrations/{iid}", get_integration, methods=["GET"]),
    Route("/account/integrations/{iid}/edit", edit_integration, methods=["GET", "POST"]),
    Route("/account/integrations/{iid}/delete", delete_integration, methods=["GET", "POST"]),
    Route("/account/integrations/{iid}/contacts.csv", get_contacts_csv, methods=["GET"]),
    Route("/account/integrations/{iid}/deliveries", get_deliveries, methods=["GET"]),
    Route("/account/integrations/{iid}/chats", get_chat, methods=["GET"]),
    Route("/account/integrations/{iid}/chats/{conversation_id:path}", get_chat, methods=["GET"]),
    Route("/account/integrations/{iid}/backfills/{bid}.json", backfill_json, methods=["GET"]),
    # An action's URL answers GET too (with its page): a reload never meets a bare 405.
    Route("/account/integrations/{iid}/keys", new_key, methods=["GET", "POST"]),
    Route("/account/integrations/{iid}/webhook", set_webhook, methods=["GET", "POST"]),
    Route("/account/integrations/{iid}/webhook/delete", delete_webhook, methods=["GET", "POST"]),
    Route("/account/integrations/{iid}/keys/{key_id}/revoke", revoke_key, methods=["GET", "POST"]),
    Route("/account/integrations/{iid}/backfills", start_backfill, methods=["GET", "POST"]),
    Route(
        "/account/integrations/{iid}/backfills/{bid}/cancel",
        cancel_backfill,
        methods=["GET", "POST"],
    ),
    Mount("/static", app=StaticFiles(directory=APP_DIR / "static"), name="static"),
]
