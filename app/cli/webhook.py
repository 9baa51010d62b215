"""`webhook set|show|delete`: Freshchat's own webhooks for an integration (§12)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli.common import Subparsers, command, emit, json_flag, out, with_integrations
from app.errors import BadRequest
from app.integrations import Integrations
from app.settings import Settings
from app.webhooks import WebhookIn, WebhookOut, Webhooks

NO_PUBLIC_URL = (
    "(PUBLIC_URL is not set: put this service's public address, as Freshchat reaches it, "
    "before the path)"
)


def _read_key(name: str) -> str:
    """The public key file's text ('-' reads standard input)."""
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BadRequest(f"cannot read --public-key-file {name}: {exc.strerror}") from None


def _show(args: argparse.Namespace, settings: Settings, hook: WebhookOut, verb: str) -> None:
    lines = [
        f"{verb} Freshchat webhook of integration {hook.integration_id}",
        f"URL to paste into Freshchat > Settings > Webhooks: {hook.url}",
        f"public key fingerprint: {hook.fingerprint}",
    ]
    if not settings.public_url:
        lines.insert(2, NO_PUBLIC_URL)
    if verb == "the":
        used = hook.last_request_at
        lines.append(f"last request: {'never' if used is None else used} (unix time)")
    emit(args, out(hook), "\n".join(lines))


def cmd_webhook_set(args: argparse.Namespace, settings: Settings) -> int:
    """Store the public key; print the URL."""
    given = WebhookIn(public_key=_read_key(args.public_key_file), new_url=args.new_url)

    async def run(i: Integrations) -> WebhookOut:
        integration = await i.get(args.id)
        webhooks = Webhooks(i.redis, settings)
        hook = await webhooks.set(integration, given)
        return await webhooks.view(integration.id, hook, "")

    _show(args, settings, with_integrations(settings, run), "set up the")
    return 0


def cmd_webhook_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print the URL and key fingerprint."""

    async def run(i: Integrations) -> WebhookOut:
        integration = await i.get(args.id)
        webhooks = Webhooks(i.redis, settings)
        return await webhooks.view(integration.id, await webhooks.get(integration.id), "")

    _show(args, settings, with_integrations(settings, run), "the")
    return 0


def cmd_webhook_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Stop accepting the webhook."""

    async def run(i: Integrations) -> None:
        integration = await i.get(args.id)
        webhooks = Webhooks(i.redis, settings)
        if not await webhooks.delete(integration):
            await webhooks.get(integration.id)  # NotFound with its message

    with_integrations(settings, run)
    emit(args, {"id": args.id, "webhook": None}, f"deleted the webhook of {args.id}")
    return 0


def register(sub: Subparsers) -> None:
    """Add `webhook`."""
    hook = sub.add_parser(
        "webhook", help="Freshchat's own webhooks (no app needed): public key and URL"
    )
    wsub = hook.add_subparsers(dest="action", required=True, metavar="ACTION")
    put = command(
        wsub,
        "set",
        "store the RSA public key from Freshchat > Settings > Webhooks and print the URL to "
        "paste there (a new key keeps the URL)",
        cmd_webhook_set,
    )
    put.add_argument("id", help="integration id")
    put.add_argument(
        "--public-key-file",
        required=True,
        help="file with the public key as copied from Freshchat ('-': standard input)",
    )
    put.add_argument(
        "--new-url", action="store_true", help="give the webhook a new URL (the old one stops)"
    )
    json_flag(put)
    show = command(wsub, "show", "print the URL and key fingerprint", cmd_webhook_show, True)
    show.add_argument("id", help="integration id")
    json_flag(show)
    delete = command(wsub, "delete", "stop accepting it (its URL answers 404)", cmd_webhook_delete)
    delete.add_argument("id", help="integration id")
    json_flag(delete)
