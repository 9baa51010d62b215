"""Administration commands: integrations and their injixo API keys."""

from __future__ import annotations

import argparse

from app.cli.common import (
    Subparsers,
    command,
    emit,
    json_flag,
    out,
    secret_arg,
    with_integrations,
)
from app.errors import BadRequest
from app.freshchat import verify_api_key
from app.integration import IntegrationChanges, NewIntegration
from app.integrations import Integrations
from app.schemas import IntegrationOut
from app.settings import Settings
from app.state import read_states


def cmd_integrations_add(args: argparse.Namespace, settings: Settings) -> int:
    """Create an integration."""
    key = secret_arg(args.freshchat_api_key)
    verify = None if args.skip_verify else verify_api_key
    new = NewIntegration(name=args.name, freshchat_domain=args.domain, freshchat_api_key=key)
    created = with_integrations(settings, lambda i: i.create(new, verify)).public()
    emit(
        args,
        out(created),
        f"created integration {created.id} ({created.name}, {created.freshchat_domain})",
    )
    return 0


def cmd_integrations_list(args: argparse.Namespace, settings: Settings) -> int:
    """List integrations with their state (§8), as the API does."""

    async def read(i: Integrations) -> list[IntegrationOut]:
        records = await i.all()
        states = await read_states(i.redis, i.redis_keys, settings, records)
        return [r.public().model_copy(update=states[r.id].api_fields()) for r in records]

    listed: list[IntegrationOut] = with_integrations(settings, read)
    lines = [
        f"{i.id}  {i.state or i.status:<23} {i.name}  ({i.freshchat_domain})"
        + (f"\n    {i.state_reason}" if i.state not in ("receiving", "deleted") else "")
        for i in listed
    ]
    data = {"integrations": [i.model_dump() for i in listed]}
    emit(args, data, "\n".join(lines) or "no integrations yet")
    return 0


def cmd_integrations_update(args: argparse.Namespace, settings: Settings) -> int:
    """Change name, domain or Freshchat key (a new key or domain is verified as on add)."""
    key = args.freshchat_api_key
    changes = IntegrationChanges(
        name=args.name,
        freshchat_domain=args.domain,
        freshchat_api_key=None if key is None else secret_arg(key),
    )
    if changes.empty():
        raise BadRequest("nothing to change: give --name, --domain or --freshchat-api-key")
    verify = None if args.skip_verify else verify_api_key
    updated = with_integrations(settings, lambda i: i.update(args.id, changes, verify)).public()
    emit(
        args,
        out(updated),
        f"updated integration {updated.id} ({updated.name}, {updated.freshchat_domain})",
    )
    return 0


def cmd_integrations_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Delete an integration (revokes its keys; counts stay readable)."""
    with_integrations(settings, lambda i: i.delete(args.id))
    emit(args, {"id": args.id, "status": "deleted"}, f"deleted integration {args.id}")
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Generate an injixo API key."""
    key = with_integrations(settings, lambda i: i.create_key(args.id))
    emit(
        args,
        key,
        f"key {key['key_id']} ({key['prefix']}…) — shown once, copy it now:\n{key['api_key']}",
    )
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """List an integration's keys (never the secrets)."""
    keys = with_integrations(settings, lambda i: i.list_keys(args.id))
    lines = [
        f"{k['key_id']}  {k['prefix']}…  {'revoked' if k['revoked_at'] else 'active'}" for k in keys
    ]
    emit(args, {"api_keys": keys}, "\n".join(lines) or "no keys yet")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a key."""
    with_integrations(settings, lambda i: i.revoke_key(args.id, args.key_id))
    emit(args, {"key_id": args.key_id, "revoked": True}, f"revoked key {args.key_id}")
    return 0


def _domain_key_verify(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--domain",
        required=required,
        help="full Freshchat domain, e.g. example.freshchat.com",
    )
    p.add_argument(
        "--freshchat-api-key",
        required=required,
        help="API key of a Freshchat Account Administrator ('-' reads it from standard "
        "input, keeping it out of shell history and ps)",
    )
    p.add_argument(
        "--skip-verify",
        action="store_true",
        help="save without checking the key against Freshchat",
    )


def register(sub: Subparsers) -> None:
    """Add `integrations` and `keys`."""
    integ = sub.add_parser("integrations", help="create, list, change and delete integrations")
    isub = integ.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = command(isub, "add", "create an integration (prints its id)", cmd_integrations_add)
    add.add_argument("--name", required=True, help="unique name, 1-100 characters")
    _domain_key_verify(add, required=True)
    json_flag(add)
    lst = command(isub, "list", "list integrations", cmd_integrations_list, read_only=True)
    json_flag(lst)
    update = command(
        isub,
        "update",
        "change an integration's name, domain or Freshchat key (a new domain or key is "
        "checked against Freshchat unless --skip-verify)",
        cmd_integrations_update,
    )
    update.add_argument("id", help="integration id")
    update.add_argument("--name", help="new unique name, 1-100 characters")
    _domain_key_verify(update, required=False)
    json_flag(update)
    delete = command(
        isub,
        "delete",
        "delete an integration: its keys are revoked, ingestion stops, counts stay readable",
        cmd_integrations_delete,
    )
    delete.add_argument("id", help="integration id")
    json_flag(delete)

    keys = sub.add_parser("keys", help="injixo API keys for the Freshworks app")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = command(ksub, "create", "generate a key (shown once)", cmd_keys_create)
    create.add_argument("id", help="integration id")
    json_flag(create)
    klist = command(ksub, "list", "list keys (prefixes only)", cmd_keys_list, read_only=True)
    klist.add_argument("id", help="integration id")
    json_flag(klist)
    revoke = command(ksub, "revoke", "revoke a key; it stops working at once", cmd_keys_revoke)
    revoke.add_argument("id", help="integration id")
    revoke.add_argument("key_id", help="the key's id (from keys list)")
    json_flag(revoke)
