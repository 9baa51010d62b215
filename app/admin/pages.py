"""The integrations list and the add flow, following the help-center article step by step:
*Account > Integrations* → *Add integration* → **Freshworks** tile → **Freshchat** section
→ form → *Save integration* (with inline errors per field)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from app.admin.page import (
    Page,
    form_field,
    posted_form,
    sentence,
    signed_in_page,
    signin_redirect,
)
from app.admin.session import HOME
from app.admin.states import state_view
from app.admin.status import status_rows
from app.domains import normalise_domain
from app.errors import AppError, BadRequest, Conflict, FreshchatUnreachable, UpstreamError
from app.freshchat import verify_api_key
from app.integration import NewIntegration
from app.integrations import clean_name

API_KEY_HINT = "Paste the API key of a Freshchat user with the Account Administrator role"
FORM = "/account/integrations/new/freshworks/freshchat"
KEPT_CHARS = 400  # of what was typed and its errors, kept across the redirect (names: 100)
EMPTY = {"name": "", "freshchat_domain": ""}
ADD_FORM = {
    "action": FORM,
    "submit": "Save integration",
    "cancel": HOME,
    "failed": "The integration was not saved.",
    "key_hint": (
        "In Freshchat, copy a valid API key of a user with the Account Administrator role "
        "(Settings > API Tokens) and paste it here."
    ),
    "key_required": True,
}


async def get_home(request: Request) -> Response:
    """`/` -> the integrations list."""
    return RedirectResponse(HOME, status_code=303)


async def get_integrations(request: Request) -> Response:
    """Account > Integrations; the Freshworks tile right away when there is none."""
    page = signed_in_page(request)
    if page is None:
        return signin_redirect(request)
    records = [r for r in await page.integrations.all() if r.active]
    rows = await status_rows(
        page.redis, page.redis_keys, records, page.settings, page.request.app.state.rq_redis
    )
    for row in rows:
        row["view"] = state_view(row)
    return page.render("integrations.html", {"title": "Integrations", "rows": rows})


async def get_add_models(request: Request) -> Response:
    """Step: the Freshworks tile with *Select model*."""
    page = signed_in_page(request)
    if page is None:
        return signin_redirect(request)
    return page.render("add_models.html", {"title": "Add integration"})


async def get_add_freshworks(request: Request) -> Response:
    """Step: the Freshchat section with *Add integration*."""
    page = signed_in_page(request)
    if page is None:
        return signin_redirect(request)
    return page.render("add_freshworks.html", {"title": "Freshworks"})


def form_page(
    page: Page, template: str, form: dict[str, Any], values: dict[str, str], **context: Any
) -> Response:
    """An integration form with the errors and values of the redirect before, if any."""
    kept = page.flash.get("values") or values
    errors = page.flash.get("errors") or {}
    return page.render(template, {**context, "form": form, "values": kept, "errors": errors})


def retry_form(page: Page, target: str, values: dict[str, str], errors: dict[str, str]) -> Response:
    """Back to the form (303) with its errors and what was typed, never the API key."""
    kept = {k: v[:KEPT_CHARS] for k, v in values.items()}
    said = {k: v[:KEPT_CHARS] for k, v in errors.items()}
    return page.redirect(target, {"values": kept, "errors": said})


def field_errors(
    page: Page, name: str, domain: str, api_key: str, key_required: bool = True
) -> dict[str, str]:
    """What is wrong with the form before asking Freshchat, per field."""
    errors: dict[str, str] = {}
    try:
        clean_name(name)
    except BadRequest as exc:
        errors["name"] = sentence(exc.message)
    try:
        normalise_domain(domain, page.settings.freshchat_allow_insecure)
    except BadRequest as exc:
        errors["freshchat_domain"] = sentence(exc.message)
    if key_required and not api_key.strip():
        errors["freshchat_api_key"] = API_KEY_HINT
    return errors


def save_errors(exc: AppError) -> dict[str, str]:
    """What the store or Freshchat refused, at the field it concerns."""
    message = sentence(exc.message)
    if isinstance(exc, Conflict):
        return {"name": message + ": choose another name"}
    if isinstance(exc, FreshchatUnreachable):
        return {"freshchat_domain": message}
    if isinstance(exc, UpstreamError):
        return {"freshchat_api_key": message}
    return {"form": message}


async def add_freshchat_form(request: Request) -> Response:
    """The form (GET) and *Save integration* (POST: 303 to the new integration's page, or
    back to the form with inline errors per field)."""
    if request.method == "GET":
        page = signed_in_page(request)
        if page is None:
            return signin_redirect(request)
        title = "Add a Freshchat integration"
        return form_page(page, "add_freshchat.html", ADD_FORM, EMPTY, title=title)
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    name, domain = form_field(form, "name"), form_field(form, "freshchat_domain")
    api_key = form_field(form, "freshchat_api_key")
    values = {"name": name, "freshchat_domain": domain}  # never the API key
    errors = field_errors(page, name, domain, api_key)
    if errors:
        return retry_form(page, FORM, values, errors)
    try:
        new = NewIntegration(name=name, freshchat_domain=domain, freshchat_api_key=api_key)
        record = await page.integrations.create(new, verify_api_key)
    except (BadRequest, Conflict, UpstreamError) as exc:
        return retry_form(page, FORM, values, save_errors(exc))
    return page.redirect(f"/account/integrations/{record.id}#install", {"saved": True})
