"""Process commands: an RQ worker, the web process and the one-command `dev` setup."""

from __future__ import annotations

import argparse
from contextlib import nullcontext

from app.cli.common import Given, Subparsers, command, json_flag
from app.settings import Settings


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


def register(sub: Subparsers) -> None:
    """Add `worker`, `web` and `dev`."""
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
