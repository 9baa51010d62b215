"""The page's second way to connect (§12): paste Freshchat's webhook public key, get the URL
to paste back into Freshchat; replace the key, or stop accepting the webhook."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.admin.contacts import integration_url, posted_to_section
from app.admin.page import form_field, sentence
from app.admin.session import HOME
from app.errors import AppError, NotFound
from app.webhooks import WebhookIn, Webhooks

SECTION = "#webhook"
NO_INTEGRATION = "There is no such integration."


async def set_webhook(request: Request) -> Response:
    """*Save public key* (POST): store it and show the URL; the page again with the error
    and the pasted text when it is not an RSA public key. GET goes to the section."""
    posted = await posted_to_section(request, SECTION)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    target = integration_url(request, SECTION)
    pasted = form_field(form, "public_key")
    given = WebhookIn(public_key=pasted, new_url=form_field(form, "new_url") == "1")
    try:
        record = await page.integrations.get(request.path_params["iid"])
        await Webhooks(page.redis, page.settings).set(record, given)
    except NotFound:
        return page.redirect(HOME, {"problem": NO_INTEGRATION})
    except AppError as exc:
        # The pasted text is a public key (no secret): it is shown again to be corrected.
        return page.redirect(
            target, {"webhook_problem": sentence(exc.message), "webhook_pasted": pasted[:1500]}
        )
    notice = "New webhook URL: paste it into Freshchat." if given.new_url else "Public key saved."
    return page.redirect(target, {"webhook_saved": notice})


async def delete_webhook(request: Request) -> Response:
    """*Stop accepting webhooks* (POST): the URL answers 404 from then on."""
    posted = await posted_to_section(request, SECTION)
    if isinstance(posted, Response):
        return posted
    page, _ = posted
    target = integration_url(request, SECTION)
    try:
        record = await page.integrations.get(request.path_params["iid"])
    except NotFound:
        return page.redirect(HOME, {"problem": NO_INTEGRATION})
    await Webhooks(page.redis, page.settings).delete(record)
    return page.redirect(target, {"webhook_saved": "Freshchat's webhooks are no longer accepted."})
