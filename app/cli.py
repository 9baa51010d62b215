"""The `injixo-freshchat` command: administration, workers, the web process and `dev`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.changes import Changes, parse_revision, read_changes
from app.counts import Snapshot, read_counts, to_csv
from app.deliveries import read_deliveries
from app.errors import AppError, BadRequest
from app.explain import explain
from app.freshchat import verify_api_key
from app.integration import IntegrationChanges, NewIntegration
from app.integrations import Integrations
from app.intervals import INTERVALS, parse_query
from app.schemas import IntegrationOut
from app.settings import Settings, load_settings
from app.state import read_states

PROG = "injixo-freshchat"

#: A well-formed Fernet key that stands in for an unset ENCRYPTION_KEY in commands that only
#: read: settings validation needs one, and those commands never encrypt or decrypt.
READ_ONLY_KEY = "cmVhZC1vbmx5IENMSTogbmV2ZXIgZW5jcnlwdHMhISE="

#: Input fields whose CLI flag is not `--` + the field name.
FLAGS = {"freshchat_domain": "--domain"}


class Given(BaseSettings):
    """Settings as the environment and `.env` give them, unchecked: tells unset from wrong."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    redis_url: str | None = None
    admin_token: str | None = None
    encryption_key: str | None = None


def version() -> str:
    """The installed package's version; from pyproject.toml when run from a bare source tree."""
    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:
        pass
    try:
        with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown (not installed)"


def _print(args: argparse.Namespace, data: Any, human: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(human + "\n")


def _out(model: BaseModel) -> Any:
    """A model as the API serialises it (same fields)."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


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
        _out(created),
        f"created integration {created.id} ({created.name}, {created.freshchat_domain})",
    )
    return 0


def cmd_integrations_list(args: argparse.Namespace, settings: Settings) -> int:
    """List integrations with their state (§8), as the API does."""

    async def read(i: Integrations) -> list[IntegrationOut]:
        records = await i.all()
        states = await read_states(i.redis, i.redis_keys, settings, records)
        return [r.public().model_copy(update=states[r.id].api_fields()) for r in records]

    listed: list[IntegrationOut] = _with_integrations(settings, read)
    lines = [
        f"{i.id}  {i.state or i.status:<23} {i.name}  ({i.freshchat_domain})"
        + (f"\n    {i.state_reason}" if i.state not in ("receiving", "deleted") else "")
        for i in listed
    ]
    data = {"integrations": [i.model_dump() for i in listed]}
    _print(args, data, "\n".join(lines) or "no integrations yet")
    return 0


def cmd_integrations_update(args: argparse.Namespace, settings: Settings) -> int:
    """Change name, domain or Freshchat key (a new key or domain is verified as on add)."""
    key = args.freshchat_api_key
    changes = IntegrationChanges(
        name=args.name,
        freshchat_domain=args.domain,
        freshchat_api_key=None if key is None else _secret_arg(key),
    )
    if changes.empty():
        raise BadRequest("nothing to change: give --name, --domain or --freshchat-api-key")
    verify = None if args.skip_verify else verify_api_key
    updated = _with_integrations(settings, lambda i: i.update(args.id, changes, verify)).public()
    _print(
        args,
        _out(updated),
        f"updated integration {updated.id} ({updated.name}, {updated.freshchat_domain})",
    )
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

    found: list[dict[str, Any]] = _with_integrations(settings, read)
    data = {"deliveries": found}
    _print(args, data, "\n".join(_delivery_lines(found)) or "no deliveries kept")
    return 0


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    """Explain one chat: counted or not, where, when and why."""

    async def read(i: Integrations) -> dict[str, Any]:
        integration = await i.get(args.id)
        return await explain(i.redis, i.redis_keys, settings, integration, args.conversation_id)

    found: dict[str, Any] = _with_integrations(settings, read)
    if found["counted"]:
        head = (
            f"{found['conversation_id']}: counted once, {found['kind']}, in {found['queue']}, "
            f"interval starting {found['interval_start']} (at {found['time']})"
        )
    else:
        head = f"{found['conversation_id']}: not counted"
    why = f"why: {found['why']['text']} ({found['why']['code']})"
    human = "\n".join([head, why, *_delivery_lines(found["deliveries"])])
    _print(args, found, human)
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

    return run_dev(Given(), port=args.port, ephemeral=args.ephemeral, as_json=args.json)


EPILOG = """\
Settings come from the environment (and .env in the working directory) as for the web
process and the workers: REDIS_URL, ADMIN_TOKEN, ENCRYPTION_KEY, ... Commands that only
read (integrations list, keys list, contacts, changes) work without ENCRYPTION_KEY; the
others need the instance's key.
Every command takes --json (after its arguments) for machine-readable output; an error is
one line on stderr and a non-zero exit (2: invalid settings).
`injixo-freshchat dev` prints an `export ...` block that points this command at it."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for `--help`)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The injixo side of the Freshchat integration: administration, the web "
        "process, workers and a one-command local setup.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help: str,
        func: Callable[..., int],
        read_only: bool = False,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=description or help
        )
        p.set_defaults(func=func, read_only=read_only)
        return p

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")

    def domain_key_verify(p: argparse.ArgumentParser, required: bool) -> None:
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

    integ = sub.add_parser("integrations", help="create, list, change and delete integrations")
    isub = integ.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = command(isub, "add", "create an integration (prints its id)", cmd_integrations_add)
    add.add_argument("--name", required=True, help="unique name, 1-100 characters")
    domain_key_verify(add, required=True)
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
    domain_key_verify(update, required=False)
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

    worker = command(sub, "worker", "run an RQ worker that drains pending events", cmd_worker)
    worker.add_argument(
        "--burst", action="store_true", help="process everything pending, then exit"
    )
    json_flag(worker)

    web = command(sub, "web", "run the web process (uvicorn; WEB_CONCURRENCY processes)", cmd_web)
    web.add_argument("--host", default="0.0.0.0", help="default: 0.0.0.0")
    web.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
    json_flag(web)

    dev = command(
        sub,
        "dev",
        "run Redis, the web process and a worker locally, in one command",
        cmd_dev,
        description="Runs the web process and a worker against REDIS_URL if it answers, else "
        "against a private Redis (redis-server from PATH, else an embedded one) whose data, "
        "admin token and encryption key are kept in .dev/ across restarts. Once the web "
        "process answers it prints the URLs, the admin token and an export block that points "
        "this command at the instance. Ctrl-C stops everything; if one of its processes "
        "fails, it stops the rest and exits non-zero with the reason.",
    )
    dev.add_argument("--port", type=int, default=None, help="web port (default: $PORT or 8000)")
    dev.add_argument(
        "--ephemeral",
        action="store_true",
        help="a throw-away private Redis and admin token/encryption key (default: kept in .dev/ "
        "across restarts)",
    )
    json_flag(dev)
    dev.set_defaults(no_settings=True)
    return parser


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """`os.environ[name] = value` for a while (load_settings reads only the environment)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _settings(args: argparse.Namespace) -> Settings | None:
    """The settings a command needs; read-only commands do without ENCRYPTION_KEY."""
    if getattr(args, "no_settings", False):
        return None
    if args.read_only and not Given().encryption_key:
        with _environ("ENCRYPTION_KEY", READ_ONLY_KEY):
            return load_settings()
    return load_settings()


def _invalid(exc: ValidationError) -> str:
    """The first input problem, named by its flag."""
    first = exc.errors(include_url=False)[0]
    name = ".".join(str(p) for p in first["loc"])
    return f"invalid {FLAGS.get(name, '--' + name.replace('_', '-'))}: {first['msg']}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors become one line on stderr and a non-zero exit."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, _settings(args)))
    except AppError as exc:
        sys.stderr.write(f"{PROG}: {exc.message}\n")
        return 2 if exc.reason == "config" else 1
    except ValidationError as exc:
        sys.stderr.write(f"{PROG}: {_invalid(exc)}\n")
        return 1
    except RedisError as exc:
        sys.stderr.write(f"{PROG}: cannot reach Redis ({type(exc).__name__}); check REDIS_URL\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
