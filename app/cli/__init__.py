"""The `injixo-freshchat` command: administration, workers, the web process and `dev`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pydantic import ValidationError
from redis.exceptions import RedisClusterException, RedisError

from app.cli import admin, backfill, processes, reads, webhook
from app.cli.common import PROG, Given, version
from app.errors import AppError
from app.settings import Settings, load_settings

__all__ = ["Given", "build_parser", "main", "version"]

#: A well-formed Fernet key that stands in for an unset ENCRYPTION_KEY in commands that only
#: read: settings validation needs one, and those commands never encrypt or decrypt.
READ_ONLY_KEY = "cmVhZC1vbmx5IENMSTogbmV2ZXIgZW5jcnlwdHMhISE="

#: Input fields whose CLI flag is not `--` + the field name.
FLAGS = {"freshchat_domain": "--domain"}

EPILOG = """\
Settings come from the environment (and .env in the working directory) as for the web
process and the workers: REDIS_URL, ADMIN_TOKEN, ENCRYPTION_KEY, ... Commands that only
read (integrations list, keys list, contacts, changes, deliveries, explain, webhook show,
backfill list, backfill show) work without ENCRYPTION_KEY; the others need the instance's key.
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

    for part in (admin, webhook, backfill, reads, processes):
        part.register(sub)
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
    except (RedisError, RedisClusterException) as exc:
        sys.stderr.write(f"{PROG}: cannot reach Redis ({type(exc).__name__}); check REDIS_URL\n")
        return 1
    except KeyboardInterrupt:
        return 130
