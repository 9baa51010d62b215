"""`/v1/integrations/{id}/webhook`: set up Freshchat's own webhooks for an integration (§12)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import admin_of, json_response, parse_json
from app.integrations import Integrations
from app.webhooks import WebhookIn, Webhooks


def _webhooks(integrations: Integrations) -> Webhooks:
    return Webhooks(integrations.redis, integrations.settings)


async def webhook(request: Request) -> Response:
    """PUT: paste the public key, get the URL; GET: show it; DELETE: stop accepting."""
    integrations = admin_of(request)
    integration = await integrations.get(request.path_params["iid"])
    webhooks = _webhooks(integrations)
    if request.method == "DELETE":
        if not await webhooks.delete(integration):
            await webhooks.get(integration.id)  # NotFound, named as GET names it
        return Response(status_code=204)
    if request.method == "PUT":
        given = parse_json(await request.body(), WebhookIn)
        hook = await webhooks.set(integration, given)
    else:
        hook = await webhooks.get(integration.id)
    view = await webhooks.view(integration.id, hook, str(request.base_url))
    return json_response(view)


ROUTES = [Route("/v1/integrations/{iid}/webhook", webhook, methods=["GET", "PUT", "DELETE"])]
