"""The web application: factory, lifespan, routes and the error handler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from app.admin import PAGE_ROUTES
from app.api import ROUTES
from app.dashboard import dashboard_app
from app.errors import AppError, Unauthorized, Unavailable
from app.ingest import Ingest
from app.integrations import Integrations
from app.jobs import rq_connection
from app.logs import REQUEST_LINES, RequestLog, configure
from app.metrics import metrics
from app.openapi import openapi
from app.settings import Settings, load_settings

log = logging.getLogger("injixo.web")


def _error_response(exc: AppError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return _error_response(exc)


async def _redis_error(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", type(exc).__name__)
    return _error_response(Unavailable("storage is unavailable, retry later", retry_after=2))


async def healthz(request: Request) -> Response:
    """The process is alive."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Redis answers."""
    try:
        await request.app.state.redis.ping()
    except RedisError:
        return Response(
            b'{"status":"redis unavailable"}', status_code=503, media_type="application/json"
        )
    return Response(b'{"status":"ready"}', media_type="application/json")


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the Starlette app; settings are read from the environment when not given."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        sync_redis = rq_connection(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        app.state.settings = settings
        app.state.redis = redis
        app.state.integrations = Integrations(redis, settings)
        app.state.ingest = Ingest.build(settings, redis, sync_redis)
        try:
            yield
        finally:
            REQUEST_LINES.flush()
            await redis.aclose()
            sync_redis.close()

    async def events(request: Request) -> Response:
        ingest: Ingest = request.app.state.ingest
        return await ingest.endpoint(request)

    routes = [
        Route("/v1/freshchat/events", events, methods=["POST"]),
        *ROUTES,
        *PAGE_ROUTES,
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Mount("/rq", app=dashboard_app(settings)),
    ]
    configure(settings.log_level)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={AppError: _app_error, RedisError: _redis_error},
    )
    app.add_middleware(RequestLog)
    return app
