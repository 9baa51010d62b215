"""The web application: factory, lifespan, routes and the error handler."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from app.admin import PAGE_ROUTES, session_check
from app.api import ROUTES
from app.api_backfill import ROUTES as BACKFILL_ROUTES
from app.api_webhook import ROUTES as WEBHOOK_ROUTES
from app.dashboard import dashboard_app
from app.errors import AppError, storage_unavailable
from app.ingest import EVENTS_PATH, Ingest
from app.integrations import Integrations
from app.logs import REQUEST_LINES, RequestLog, configure
from app.metrics import metrics
from app.openapi import openapi
from app.redis_client import (
    STORAGE_ERRORS,
    async_data_client,
    async_rq_client,
    data_client,
    rq_client,
)
from app.settings import Settings, load_settings
from app.webhook_ingest import WebhookIngest
from app.webhooks import WEBHOOK_PATH

log = logging.getLogger("injixo.web")
# How long the web tier waits for one Redis reply. A request queued behind a write that
# hangs is answered 503 within about twice this; a write that times out may still land
# later, which is harmless (a 503 asks the sender to retry, and duplicates change no count).
REDIS_TIMEOUT_S = 3.0


def _error_response(exc: AppError) -> Response:
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers(),
    )


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405: under /v1 in the API's one JSON error shape (§6)."""
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith("/v1/"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    reasons = {
        404: ("no such endpoint", "not_found"),
        405: ("method not allowed", "method_not_allowed"),
    }
    message, reason = reasons.get(exc.status_code, (str(exc.detail), "invalid"))
    return Response(
        orjson.dumps(
            {"error": f"{message}: {request.method} {request.url.path}", "reason": reason}
        ),
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers,
    )


async def _redis_error(request: Request, exc: Exception) -> Response:
    """Redis (or a cluster in a failover or a slot migration) cannot serve it now: 503."""
    log.warning("redis unavailable: %s", type(exc).__name__)
    return _error_response(storage_unavailable())


async def healthz(request: Request) -> Response:
    """The process is alive."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Ready while the data Redis answers. RQ's own Redis (RQ_REDIS_URL) being down is said
    in the body but keeps the process ready: events are still stored, and drains are
    enqueued by the workers' janitor once RQ's Redis is back."""
    state = request.app.state
    try:
        await state.redis.ping()
    except STORAGE_ERRORS:
        return Response(
            b'{"status":"redis unavailable"}', status_code=503, media_type="application/json"
        )
    if state.rq_redis is not state.redis:
        try:
            await state.rq_redis.ping()
        except STORAGE_ERRORS:
            return Response(
                b'{"status":"ready","rq_redis":"unavailable"}', media_type="application/json"
            )
    return Response(b'{"status":"ready"}', media_type="application/json")


class EventsRoute:
    """The events endpoint as a plain ASGI app (a class, so Starlette does not wrap it in
    its request/response adapter): it hands the request to the process's Ingest."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        ingest: Ingest = scope["app"].state.ingest
        await ingest(scope, receive, send)


EVENTS = EventsRoute()


class WebhooksRoute:
    """Freshchat's webhook endpoint (§12) as a plain ASGI app, like the events endpoint."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        webhooks: WebhookIngest = scope["app"].state.webhooks
        await webhooks(scope, receive, send)


WEBHOOKS = WebhooksRoute()


class App(Starlette):
    """Starlette, with `POST /v1/freshchat/events` (and Freshchat's webhooks) served ahead of
    the middleware stack.

    It is the one hot path and maps its own errors and writes its own log line; skipping
    the layers took its CPU per request from about 72 to 52 µs (bench/RESULTS.md). Behind
    a path prefix the route below serves it through the stack, with the same answers.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch the events endpoint directly; everything else goes through Starlette."""
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == EVENTS_PATH:
                scope["app"] = self
                await EVENTS(scope, receive, send)
                return
            if path.startswith(WEBHOOK_PATH) and "/" not in path[len(WEBHOOK_PATH) :]:
                scope["app"] = self
                await WEBHOOKS(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


GC_THRESHOLDS = (50_000, 20, 100)  # CPython's default first one is 700 (2,000 in 3.13)
_gc_tuned = False


def tune_gc() -> None:
    """Fewer collections in a process that serves events: the objects alive after start-up
    are frozen out of every collection, and the young generation is collected after
    50,000 allocations rather than 700 (a 500-event body makes tens of thousands of short-
    lived objects; the bench measured 10-15 % of a batch's CPU in collections). Once per
    process."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the Starlette app; settings are read from the environment when not given."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Few, quick retries, and only of connection errors (a stale pooled connection after
        # a Redis restart): a command that timed out may have run, and redis-py's default
        # (10 retries of a 5 s timeout) would hold a request for a minute when Redis hangs.
        retry = Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=0.25),
            retries=3,
            supported_errors=(RedisConnectionError,),
        )
        # (On a cluster, REDIS_CLUSTER, `retry` only sets how often a command is sent again
        # after a connection error, a timeout or CLUSTERDOWN, each time on a fresh slot map.)
        redis = async_data_client(
            settings, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=2, retry=retry
        )
        sync_redis = data_client(settings, socket_timeout=5, socket_connect_timeout=2)
        # RQ's own Redis (§14) only when RQ_REDIS_URL names another one: with one Redis the
        # same clients serve both, so enqueueing a drain costs what it did.
        separate_rq = settings.rq_url != settings.redis_url
        rq_redis = redis
        sync_rq = sync_redis
        if separate_rq:
            rq_redis = async_rq_client(
                settings, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=2, retry=retry
            )
            sync_rq = rq_client(settings, socket_timeout=5, socket_connect_timeout=2)
        app.state.settings = settings
        app.state.redis = redis
        app.state.rq_redis = rq_redis
        app.state.integrations = Integrations(redis, settings)
        app.state.ingest = Ingest.build(settings, redis, sync_redis, sync_rq)
        app.state.webhooks = WebhookIngest.build(app.state.ingest)
        tune_gc()
        try:
            yield
        finally:
            REQUEST_LINES.flush()
            await redis.aclose()
            sync_redis.close()
            if separate_rq:
                await rq_redis.aclose()
                sync_rq.close()

    routes = [
        Route(EVENTS_PATH, EVENTS, methods=["POST"]),
        Route(WEBHOOK_PATH + "{webhook_id}", WEBHOOKS, methods=["POST"]),
        *ROUTES,
        *WEBHOOK_ROUTES,
        *BACKFILL_ROUTES,
        *PAGE_ROUTES,
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Mount("/rq", app=dashboard_app(settings, session_check(settings))),
    ]
    configure(settings.log_level)
    app = App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            AppError: _app_error,
            RedisError: _redis_error,
            RedisClusterException: _redis_error,  # e.g. no master serves a slot (failover)
            HTTPException: _http_error,
        },
    )
    app.add_middleware(RequestLog)
    return app
