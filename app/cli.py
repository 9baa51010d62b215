"""The `injixo-freshchat` command: administration, workers, the web process and `dev`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.changes import Changes, parse_revision, read_changes
from app.counts import Snapshot, read_counts, to_csv
from app.errors import AppError
from app.freshchat import verify_api_key
from app.integration import NewIntegration
from app.integrations import Integrations
from app.intervals import INTERVALS, parse_query
from app.settings import Settings, load_settings

PROG = "injixo-freshchat"


def _print(args: argparse.Namespace, data: Any, human: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(human + "\n")


def _with_integrations(settings: Settings, action: Callable[[Integrations], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)
        try:
            return await action(Integrations(redis, settings))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _secret_arg(value: str) -> str:
    """`-` reads the secret from standard input (keeps it out of shell history and `ps`)."""
    return sys.stdin.readline().strip() if value == "-" else value


def cmd_integrations_add(args: argparse.Namespace, settings: Settings) -> int:
    """Create an integration."""
    key = _secret_arg(args.freshchat_api_key)
    verify = None if args.skip_verify else verify_api_key
    new = NewIntegration(name=args.name, freshchat_domain=args.domain, freshchat_api_key=key)
    created = _with_integrations(settings, lambda i: i.create(new, verify)).public()
    _print(
        args,
        created.model_dump(),
        f"created integration {created.id} ({created.name}, {created.freshchat_domain})",
    )
    return 0


def cmd_integrations_list(args: argparse.Namespace, settings: Settings) -> int:
    """List integrations."""
    listed = [i.public() for i in _with_integrations(settings, lambda i: i.all())]
    lines = [f"{i.id}  {i.status:<8} {i.name}  ({i.freshchat_domain})" for i in listed]
    data = {"integrations": [i.model_dump() for i in listed]}
    _print(args, data, "\n".join(lines) or "no integrations yet")
    return 0


def cmd_integrations_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Delete an integration (revokes its keys; counts stay readable)."""
    _with_integrations(settings, lambda i: i.delete(args.id))
    _print(args, {"id": args.id, "status": "deleted"}, f"deleted integration {args.id}")
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Generate an injixo API key."""
    key = _with_integrations(settings, lambda i: i.create_key(args.id))
    _print(
        args,
        key,
        f"key {key['key_id']} ({key['prefix']}…) — shown once, copy it now:\n{key['api_key']}",
    )
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """List an integration's keys (never the secrets)."""
    keys = _with_integrations(settings, lambda i: i.list_keys(args.id))
    lines = [
        f"{k['key_id']}  {k['prefix']}…  {'revoked' if k['revoked_at'] else 'active'}" for k in keys
    ]
    _print(args, {"api_keys": keys}, "\n".join(lines) or "no keys yet")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a key."""
    _with_integrations(settings, lambda i: i.revoke_key(args.id, args.key_id))
    _print(args, {"key_id": args.key_id, "revoked": True}, f"revoked key {args.key_id}")
    return 0


def cmd_contacts(args: argparse.Namespace, settings: Settings) -> int:
    """Print counts for a range."""
    query = parse_query(args.from_, args.to, str(args.interval), args.tz, args.queue)

    async def read(i: Integrations) -> Snapshot:
        integration = await i.get(args.id)
        return await read_counts(i.redis, i.redis_keys, integration.shard, args.id, query)

    snapshot: Snapshot = _with_integrations(settings, read)
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
    _print(
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

    found: Changes = _with_integrations(settings, read)
    listed = [{"interval_start": at, "queue": queue} for at, queue in found.changes]
    data = {"integration_id": args.id, "since": found.since, "revision": found.revision}
    lines = [f"{at}  {queue}" for at, queue in found.changes]
    human = "\n".join(lines) or "no changes"
    _print(args, {**data, "changes": listed}, f"{human}\n(revision {found.revision})")
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run an RQ worker."""
    from workers.runner import run_worker  # the CLI is the entry point that ties both packages

    run_worker(settings, burst=args.burst)
    return 0


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    """Run the web process with uvicorn (WEB_CONCURRENCY processes)."""
    import uvicorn

    from app.metrics import shared_between_processes

    with shared_between_processes() if settings.web_concurrency > 1 else nullcontext():
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            workers=settings.web_concurrency,
            host=args.host,
            port=args.port or settings.port,
            proxy_headers=True,
            access_log=False,
            log_level="warning",
        )
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings | None) -> int:
    """Start Redis (if needed), web and worker together."""
    from app.dev import run_dev

    return run_dev(port=args.port)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for `--help`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The injixo side of the Freshchat integration. Settings come from the "
        "environment (and .env): REDIS_URL, ADMIN_TOKEN, READER_TOKENS, ENCRYPTION_KEY, …",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")

    integ = sub.add_parser("integrations", help="create, list and delete integrations")
    isub = integ.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = isub.add_parser("add", help="create an integration")
    add.add_argument("--name", required=True, help="unique name, 1-100 characters")
    add.add_argument(
        "--domain", required=True, help="full Freshchat domain, e.g. example.freshchat.com"
    )
    add.add_argument(
        "--freshchat-api-key",
        required=True,
        help="API key of a Freshchat Account Administrator ('-' reads it from standard input)",
    )
    add.add_argument(
        "--skip-verify", action="store_true", help="save without checking the key against Freshchat"
    )
    json_flag(add)
    add.set_defaults(func=cmd_integrations_add)
    lst = isub.add_parser("list", help="list integrations")
    json_flag(lst)
    lst.set_defaults(func=cmd_integrations_list)
    delete = isub.add_parser("delete", help="delete an integration (counts stay readable)")
    delete.add_argument("id")
    json_flag(delete)
    delete.set_defaults(func=cmd_integrations_delete)

    keys = sub.add_parser("keys", help="injixo API keys for the Freshworks app")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = ksub.add_parser("create", help="generate a key (shown once)")
    create.add_argument("id", help="integration id")
    json_flag(create)
    create.set_defaults(func=cmd_keys_create)
    klist = ksub.add_parser("list", help="list keys (prefixes only)")
    klist.add_argument("id", help="integration id")
    json_flag(klist)
    klist.set_defaults(func=cmd_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id", help="integration id")
    revoke.add_argument("key_id")
    json_flag(revoke)
    revoke.set_defaults(func=cmd_keys_revoke)

    contacts = sub.add_parser("contacts", help="contact counts per interval and queue")
    contacts.add_argument("id", help="integration id")
    contacts.add_argument("--from", dest="from_", required=True, help="ISO 8601 start (inclusive)")
    contacts.add_argument("--to", required=True, help="ISO 8601 end (exclusive)")
    contacts.add_argument("--interval", type=int, default=INTERVALS[0], choices=INTERVALS)
    contacts.add_argument(
        "--tz",
        help="IANA time zone for 30/60-minute intervals (then --from/--to need their offset)",
    )
    contacts.add_argument("--queue", help="only this source queue")
    contacts.add_argument("--csv", action="store_true", help="CSV with a header line")
    json_flag(contacts)
    contacts.set_defaults(func=cmd_contacts)

    changes = sub.add_parser(
        "changes", help="the intervals and queues whose counts changed after a revision"
    )
    changes.add_argument("id", help="integration id")
    changes.add_argument(
        "--since", required=True, help="a revision from an earlier contacts or changes answer"
    )
    json_flag(changes)
    changes.set_defaults(func=cmd_changes)

    worker = sub.add_parser("worker", help="run an RQ worker that drains pending events")
    worker.add_argument(
        "--burst", action="store_true", help="process everything pending, then exit"
    )
    json_flag(worker)
    worker.set_defaults(func=cmd_worker)

    web = sub.add_parser("web", help="run the web process (uvicorn; WEB_CONCURRENCY processes)")
    web.add_argument("--host", default="0.0.0.0")
    web.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
    json_flag(web)
    web.set_defaults(func=cmd_web)

    dev = sub.add_parser(
        "dev", help="start Redis (if REDIS_URL does not answer), web and worker for local use"
    )
    dev.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
    json_flag(dev)
    dev.set_defaults(func=cmd_dev, no_settings=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors become one line on stderr and a non-zero exit."""
    args = build_parser().parse_args(argv)
    try:
        settings = None if getattr(args, "no_settings", False) else load_settings()
        return int(args.func(args, settings))
    except AppError as exc:
        sys.stderr.write(f"{PROG}: {exc.message}\n")
        return 2 if exc.reason == "config" else 1
    except RedisError as exc:
        sys.stderr.write(f"{PROG}: cannot reach Redis ({type(exc).__name__}); check REDIS_URL\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
