"""The integrations list and the add flow, following the help-center article step by step:
*Account > Integrations* → *Add integration* → **Freshworks** tile → **Freshchat** section
→ form → *Save integration* (with inline errors per field)."""

from __future__ import annotations

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
from app.admin.status import status_rows
from app.domains import normalise_domain
from app.errors import BadRequest, Conflict, FreshchatUnreachable, UpstreamError
from app.freshchat import verify_api_key
from app.integration import NewIntegration
from app.integrations import clean_name

API_KEY_HINT = "Paste the API key of a Freshchat user with the Account Administrator role"


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
        page.redis, page.redis_keys, records, page.settings.stale_after_seconds
    )
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


def _add_form(
    page: Page, values: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    return page.render(
        "add_freshchat.html",
        {"title": "Add a Freshchat integration", "values": values, "errors": errors},
        status,
    )


def _field_errors(page: Page, name: str, domain: str, api_key: str) -> dict[str, str]:
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
    if not api_key.strip():
        errors["freshchat_api_key"] = API_KEY_HINT
    return errors


async def add_freshchat_form(request: Request) -> Response:
    """The form (GET) and *Save integration* (POST), with inline errors per field."""
    if request.method == "GET":
        page = signed_in_page(request)
        if page is None:
            return signin_redirect(request)
        return _add_form(page, {"name": "", "freshchat_domain": ""}, {})
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    page, form = posted
    name, domain = form_field(form, "name"), form_field(form, "freshchat_domain")
    api_key = form_field(form, "freshchat_api_key")
    values = {"name": name, "freshchat_domain": domain}  # never the API key
    errors = _field_errors(page, name, domain, api_key)
    if errors:
        return _add_form(page, values, errors, 400)
    try:
        new = NewIntegration(name=name, freshchat_domain=domain, freshchat_api_key=api_key)
        record = await page.integrations.create(new, verify_api_key)
    except Conflict as exc:
        errors["name"] = sentence(exc.message) + ": choose another name"
        return _add_form(page, values, errors, 409)
    except FreshchatUnreachable as exc:
        errors["freshchat_domain"] = sentence(exc.message)
        return _add_form(page, values, errors, 502)
    except UpstreamError as exc:
        errors["freshchat_api_key"] = sentence(exc.message)
        return _add_form(page, values, errors, 400)
    except BadRequest as exc:
        errors["form"] = sentence(exc.message)
        return _add_form(page, values, errors, 400)
    return RedirectResponse(f"/account/integrations/{record.id}?saved=1#install", 303)
