"""Edit an integration (name, domain, Freshchat API key; checked with Freshchat as on save)
and delete it after a confirmation page: plain GET pages whose forms answer 303."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from app.admin.contacts import carried, integration_url
from app.admin.page import (
    Page,
    form_field,
    page_with_integration,
    posted_form,
)
from app.admin.pages import field_errors, form_page, retry_form, save_errors
from app.admin.session import HOME
from app.domains import normalise_domain
from app.errors import BadRequest, Conflict, UpstreamError
from app.freshchat import verify_api_key
from app.integration import Integration, IntegrationChanges
from app.integrations import clean_name

KEY_HINT = (
    "Leave empty to keep the current key. A new key, or a new domain, is checked with "
    "Freshchat before it is saved."
)
KEY_AGAIN = "Paste the API key again: the stored one cannot be checked against a new domain."


async def _active(request: Request) -> tuple[Page, Integration] | Response:
    """The signed-in page and the integration it names, or the response instead."""
    found = await page_with_integration(request)
    if isinstance(found, Response):
        return found
    page, record = found
    if not record.active:
        return page.redirect(integration_url(request), {"problem": "The integration is deleted."})
    return page, record


def _own_url(request: Request) -> str:
    """This page again, with the day, interval and zone it was opened with."""
    query = carried(request.query_params)
    return quote(request.url.path) + (f"?{query}" if query else "")


async def edit_integration(request: Request) -> Response:
    """The edit form (GET); *Save changes* (POST: 303 to the integration's page, or back to
    the form with inline errors per field and what was typed, never the API key)."""
    found = await _active(request)
    if isinstance(found, Response):
        return found
    page, record = found
    if request.method == "GET":
        form = {
            "action": _own_url(request),
            "submit": "Save changes",
            "cancel": integration_url(request),
            "failed": "The changes were not saved.",
            "key_hint": KEY_HINT,
            "key_required": False,
        }
        values = {"name": record.name, "freshchat_domain": record.freshchat_domain}
        back = integration_url(request)
        context = {"title": f"Edit {record.name}", "record": record, "back": back}
        return form_page(page, "edit_integration.html", form, values, **context)
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    _, data = posted
    name, domain = form_field(data, "name"), form_field(data, "freshchat_domain")
    api_key = form_field(data, "freshchat_api_key").strip()
    values = {"name": name, "freshchat_domain": domain}
    errors = field_errors(page, name, domain, api_key, key_required=False)
    if errors:
        return retry_form(page, _own_url(request), values, errors)
    changes = _changes(record, name, domain, api_key, page.settings.freshchat_allow_insecure)
    if changes.empty():
        return page.redirect(integration_url(request), {"notice": "Nothing was changed."})
    if changes.freshchat_domain is not None and not api_key:
        try:  # the new domain is checked with the stored key, which must still decrypt
            page.integrations.decrypt_api_key(record)
        except BadRequest:
            return retry_form(page, _own_url(request), values, {"freshchat_api_key": KEY_AGAIN})
    try:
        await page.integrations.update(record.id, changes, verify_api_key)
    except (BadRequest, Conflict, UpstreamError) as exc:
        return retry_form(page, _own_url(request), values, save_errors(exc))
    return page.redirect(integration_url(request), {"notice": "The integration was updated."})


def _changes(
    record: Integration, name: str, domain: str, api_key: str, insecure: bool
) -> IntegrationChanges:
    """Only what differs: renaming alone asks nothing of Freshchat."""
    new_name, new_domain = clean_name(name), normalise_domain(domain, insecure)
    return IntegrationChanges(
        name=new_name if new_name != record.name else None,
        freshchat_domain=new_domain if new_domain != record.freshchat_domain else None,
        freshchat_api_key=api_key or None,
    )


async def delete_integration(request: Request) -> Response:
    """The confirmation page (GET); *Delete integration* (POST: 303 to the list)."""
    found = await _active(request)
    if isinstance(found, Response):
        return found
    page, record = found
    if request.method == "GET":
        context = {
            "title": f"Delete {record.name}",
            "record": record,
            "action": _own_url(request),
            "back": integration_url(request),
        }
        return page.render("delete_integration.html", context)
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    await page.integrations.delete(record.id)
    notice = f"The integration {record.name} was deleted and its injixo API keys revoked."
    return page.redirect(HOME, {"notice": notice})
