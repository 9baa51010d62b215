"""Read commands: counts, changes, the deliveries log and a chat's explanation."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.changes import Changes, parse_revision, read_changes
from app.cli.common import Subparsers, command, emit, json_flag, with_integrations
from app.counts import Snapshot, read_counts, to_csv
from app.deliveries import read_deliveries
from app.explain import explain
from app.integrations import Integrations
from app.intervals import INTERVALS, parse_query
from app.settings import Settings


def cmd_contacts(args: argparse.Namespace, settings: Settings) -> int:
    """Print counts for a range."""
    query = parse_query(args.from_, args.to, str(args.interval), args.tz, args.queue)

    async def read(i: Integrations) -> Snapshot:
        integration = await i.get(args.id)
        return await read_counts(i.redis, i.redis_keys, integration.shard, args.id, query)

    snapshot: Snapshot = with_integrations(settings, read)
    if args.csv:
        sys.stdout.write(to_csv(snapshot.rows))
        return 0
    lines = [f"{at}  {n:>6}  {queue}" for at, queue, n in snapshot.rows]
    data = {
        "integration_id": args.id,
        "interval_minutes": args.interval,
        "from": query.echo(query.start),
        "to": query.echo(query.end),
        "revision": snapshot.revision,
        "applied_through": snapshot.applied_through,
        "rows": snapshot.dict_rows(),
    }
    human = "\n".join(lines) or "no contacts in that range"
    emit(
        args,
        data,
        f"{human}\n(revision {snapshot.revision}, applied through {snapshot.applied_through})",
    )
    return 0


def cmd_changes(args: argparse.Namespace, settings: Settings) -> int:
    """Print the intervals and queues whose counts changed after a revision."""
    since = parse_revision(args.since)

    async def read(i: Integrations) -> Changes:
        integration = await i.get(args.id)
        days = settings.changes_retention_days
        return await read_changes(i.redis, i.redis_keys, integration.shard, args.id, since, days)

    found: Changes = with_integrations(settings, read)
    listed = [{"interval_start": at, "queue": queue} for at, queue in found.changes]
    data = {"integration_id": args.id, "since": found.since, "revision": found.revision}
    lines = [f"{at}  {queue}" for at, queue in found.changes]
    human = "\n".join(lines) or "no changes"
    emit(args, {**data, "changes": listed}, f"{human}\n(revision {found.revision})")
    return 0


def _delivery_lines(deliveries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for d in deliveries:
        head = (
            f"{d['received_at']}  {d['status']}  {d['accepted']} accepted, {d['ignored']} ignored"
        )
        lines.append(head + (f"  ({d['reason']})" if d["reason"] else ""))
        for e in d["events"]:
            group = e["group_name"] or e["group_id"] or "no group"
            lines.append(f"    {e['event']:<21} {e['conversation_id']}  {e['kind']:<7} {group}")
    return lines


def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    """Print the integration's recent ingestion requests, newest first."""

    async def read(i: Integrations) -> list[dict[str, Any]]:
        integration = await i.get(args.id)
        return await read_deliveries(
            i.redis,
            i.redis_keys,
            settings,
            integration.shard,
            integration.id,
            conversation=args.conversation_id,
            limit=args.limit,
            before=args.before,
        )

    found: list[dict[str, Any]] = with_integrations(settings, read)
    data = {"deliveries": found}
    emit(args, data, "\n".join(_delivery_lines(found)) or "no deliveries kept")
    return 0


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    """Explain one chat: counted or not, where, when and why."""

    async def read(i: Integrations) -> dict[str, Any]:
        integration = await i.get(args.id)
        return await explain(i.redis, i.redis_keys, settings, integration, args.conversation_id)

    found: dict[str, Any] = with_integrations(settings, read)
    if found["counted"]:
        head = (
            f"{found['conversation_id']}: counted once, {found['kind']}, in {found['queue']}, "
            f"interval starting {found['interval_start']} (at {found['time']})"
        )
    else:
        head = f"{found['conversation_id']}: not counted"
    why = f"why: {found['why']['text']} ({found['why']['code']})"
    human = "\n".join([head, why, *_delivery_lines(found["deliveries"])])
    emit(args, found, human)
    return 0


def register(sub: Subparsers) -> None:
    """Add `contacts`, `changes`, `deliveries` and `explain`."""
    contacts = command(
        sub, "contacts", "contact counts per interval and queue", cmd_contacts, read_only=True
    )
    contacts.add_argument("id", help="integration id")
    contacts.add_argument("--from", dest="from_", required=True, help="ISO 8601 start (inclusive)")
    contacts.add_argument("--to", required=True, help="ISO 8601 end (exclusive)")
    contacts.add_argument(
        "--interval", type=int, default=INTERVALS[0], choices=INTERVALS, help="minutes"
    )
    contacts.add_argument(
        "--tz",
        help="IANA time zone for 30/60-minute intervals (then --from/--to need their offset)",
    )
    contacts.add_argument("--queue", help="only this source queue")
    contacts.add_argument("--csv", action="store_true", help="CSV with a header line")
    json_flag(contacts)

    changes = command(
        sub,
        "changes",
        "the intervals and queues whose counts changed after a revision",
        cmd_changes,
        read_only=True,
    )
    changes.add_argument("id", help="integration id")
    changes.add_argument(
        "--since", required=True, help="a revision from an earlier contacts or changes answer"
    )
    json_flag(changes)

    deliveries = command(
        sub,
        "deliveries",
        "what the app sent lately (newest first), as the deliveries log keeps it",
        cmd_deliveries,
        read_only=True,
    )
    deliveries.add_argument("id", help="integration id")
    deliveries.add_argument("--conversation-id", help="only requests that name this chat")
    deliveries.add_argument(
        "--limit", type=int, default=50, choices=range(1, 1001), metavar="1-1000", help="default 50"
    )
    deliveries.add_argument("--before", help="a delivery id: only older ones (paging)")
    json_flag(deliveries)

    why = command(
        sub,
        "explain",
        "why a chat is counted where it is (or why it is not counted yet)",
        cmd_explain,
        read_only=True,
    )
    why.add_argument("id", help="integration id")
    why.add_argument("conversation_id", help="the Freshchat conversation id")
    json_flag(why)
