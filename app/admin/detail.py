"""One integration's page: details, status, contacts for a day, and its injixo API keys."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from app.admin.backfill import history_view
from app.admin.contacts import carried, integration_url, posted_to_section, read_view
from app.admin.deliveries import chosen_zone, recent_deliveries
from app.admin.page import (
    NO_INTEGRATION,
    Page,
    sentence,
    signed_in_page,
    signin_redirect,
)
from app.admin.session import HOME
from app.admin.states import state_view
from app.admin.status import status_rows
from app.errors import Conflict, NotFound
from app.intervals import INTERVALS
from app.webhooks import Webhooks

NO_KEY = "There is no such injixo API key."


async def _detail(page: Page, iid: str) -> Response:
    try:
        record = await page.integrations.get(iid)
        keys = await page.integrations.list_keys(iid)
    except NotFound:
        return page.not_found(NO_INTEGRATION)
    view = await read_view(page, record)
    (status_row,) = await status_rows(
        page.redis, page.redis_keys, [record], page.settings, page.request.app.state.rq_redis
    )
    recent = await recent_deliveries(page, record)
    webhooks = Webhooks(page.redis, page.settings)
    webhook = await webhooks.view_if_set(record.id, str(page.request.base_url))
    zone = chosen_zone(page.request)
    carry = carried(page.request.query_params)
    revoked_id = page.flash.get("revoked")
    revoked = next((k for k in keys if k["key_id"] == revoked_id), None)
    history = await history_view(page, record)
    return page.render(
        "integration.html",
        {
            "title": record.name,
            "record": record,
            "status": status_row,
            "state": state_view(status_row),
            "recent": recent,
            "deliveries_zone": zone.key if zone is not None else "UTC",
            "keys": keys,
            "webhook": webhook,
            "webhook_saved": page.flash.get("webhook_saved"),
            "webhook_problem": page.flash.get("webhook_problem"),
            "webhook_pasted": page.flash.get("webhook_pasted", ""),
            "new_key": page.flash.get("new_key"),
            "saved": bool(page.flash.get("saved")),
            "revoked": revoked,
            "counts": view,
            "carry": carry,  # what was chosen, no defaults
            "carry_fields": parse_qsl(carry),
            "intervals": INTERVALS,
            "history": history,
        },
    )


async def get_integration(request: Request) -> Response:
    """Details, status, counts for a day, and the *Install the injixo app* section (with a
    key generated just before, shown this once)."""
    page = signed_in_page(request)
    if page is None:
        return signin_redirect(request)
    return await _detail(page, request.path_params["iid"])


async def new_key(request: Request) -> Response:
    """Generate an injixo API key (POST), then redirect to the page that shows it once (a
    reload there neither shows it again nor generates another); GET goes to that page."""
    posted = await posted_to_section(request, "#install")
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    try:
        created = await page.integrations.create_key(request.path_params["iid"])
    except NotFound:
        return page.redirect(HOME, {"problem": NO_INTEGRATION})
    except Conflict as exc:
        return page.redirect(
            integration_url(request, "#install"), {"problem": sentence(exc.message)}
        )
    return page.redirect(integration_url(request, "#install"), {"new_key": created})


async def revoke_key(request: Request) -> Response:
    """Revoke one key at once (POST), then back to the keys list; GET goes to that list."""
    posted = await posted_to_section(request, "#install")
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    key_id = request.path_params["key_id"]
    try:
        await page.integrations.revoke_key(request.path_params["iid"], key_id)
    except NotFound:
        return page.redirect(integration_url(request, "#install"), {"problem": NO_KEY})
    return page.redirect(integration_url(request, "#install"), {"revoked": key_id})
