"""What every command shares: output, the integration store, secrets from stdin, flags."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.integrations import Integrations
from app.redis_client import async_data_client
from app.settings import Settings

PROG = "injixo-freshchat"

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


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
        with (Path(__file__).resolve().parents[2] / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown (not installed)"


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    """`data` as JSON with --json, else the human text."""
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(human + "\n")


def out(model: BaseModel) -> Any:
    """A model as the API serialises it (same fields)."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def with_integrations(settings: Settings, action: Callable[[Integrations], Awaitable[Any]]) -> Any:
    """Run `action` against the integration store on a short-lived Redis connection."""

    async def run() -> Any:
        redis = async_data_client(settings, socket_connect_timeout=5, socket_timeout=10)
        try:
            return await action(Integrations(redis, settings))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def secret_arg(value: str) -> str:
    """`-` reads the secret from standard input (keeps it out of shell history and `ps`)."""
    return sys.stdin.readline().strip() if value == "-" else value


def command(
    parent: Subparsers,
    name: str,
    help: str,
    func: Callable[..., int],
    read_only: bool = False,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand calling `func(args, settings)`; `read_only` ones need no ENCRYPTION_KEY."""
    p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=description or help)
    p.set_defaults(func=func, read_only=read_only)
    return p


def json_flag(p: argparse.ArgumentParser) -> None:
    """The --json flag every command takes."""
    p.add_argument("--json", action="store_true", help="machine-readable output")
