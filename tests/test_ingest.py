"""`POST /v1/freshchat/events`: every §3 answer, nothing stored for rejects, no iparams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from app.lua import STORED_OK, Stored, StoreOutcome
from app.main import create_app
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.redis_server import RedisServer
from tests.support import (
    ADMIN,
    EVENTS,
    IPARAMS_MARKER,
    all_stored_bytes,
    at,
    conv_event,
    create_integration,
    fixture,
    make_settings,
    pending,
    post_events,
)


def test_accepts_single_and_batch(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    _, key = create_integration(client)
    one = post_events(client, key, fixture("conversation_update_resolved"))
    assert one.status_code == 202 and one.json() == {"accepted": 1, "ignored": 0}
    batch = [
        fixture("conversation_create"),
        fixture("message_create"),
        fixture("conversation_update_reopened"),
    ]
    many = post_events(client, key, batch)
    assert many.status_code == 202 and many.json() == {"accepted": 2, "ignored": 1}
    assert pending(r, settings) == 3


def test_ignored_types_store_nothing(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    _, key = create_integration(client)
    response = post_events(client, key, fixture("message_create"))
    assert response.status_code == 202 and response.json() == {"accepted": 0, "ignored": 1}
    assert pending(r, settings) == 0


def test_unauthorized_answers_are_identical(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    iid, key = create_integration(client)
    body = fixture("conversation_create")
    [meta] = client.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
    assert post_events(client, key, body).status_code == 202
    revoked = client.delete(f"/v1/integrations/{iid}/api-keys/{meta['key_id']}", headers=ADMIN)
    assert revoked.status_code == 204
    answers = [
        post_events(client, None, body),
        post_events(client, "ijx_00000000_" + "A" * 43, body),
        post_events(client, key, body),
        post_events(client, key, body, Authorization="Basic abc"),
    ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.content == answers[0].content
    assert pending(r, settings) == 1


def test_revoked_key_fails_at_once_on_every_web_process(settings: Settings, r: redis.Redis) -> None:
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        iid, key = create_integration(one)
        body = fixture("conversation_create")
        assert post_events(one, key, body).status_code == 202
        assert post_events(two, key, body).status_code == 202  # both now have the key cached
        [meta] = one.get(f"/v1/integrations/{iid}/api-keys", headers=ADMIN).json()["api_keys"]
        one.delete(f"/v1/integrations/{iid}/api-keys/{meta['key_id']}", headers=ADMIN)
        assert post_events(one, key, body).status_code == 401
        assert post_events(two, key, body).status_code == 401


def missing_chat_id() -> dict[str, object]:
    bad = fixture("conversation_update_resolved")
    del bad["data"]["conversation"]["conversation_id"]
    return bad


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b"{not json", ["body"]),
        (b"42", ["body"]),
        (b"[]", ["body"]),
        ([fixture("conversation_create"), fixture("conversation_create"), missing_chat_id()],
         [2, "data", "conversation", "conversation_id"]),
        ({**fixture("conversation_create"), "timestamp": "soon"}, ["body", "timestamp"]),
        ([fixture("conversation_create"), {**fixture("conversation_create"), "timestamp": 4e9}],
         [1, "timestamp"]),
        ({**fixture("conversation_create"), "data": "x"}, ["body", "data"]),
        ([{"event": "onMessageCreate"}] * 501, ["body"]),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field_and_store_nothing(
    client: TestClient, r: redis.Redis, settings: Settings, body: object, loc: list[object]
) -> None:
    _, key = create_integration(client)
    response = post_events(client, key, body)
    assert response.status_code == 400
    data = response.json()
    assert data["error"] and data["detail"][0]["loc"] == loc
    assert pending(r, settings) == 0


def test_body_limit(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    _, key = create_integration(client)
    big = b"[" + b" " * (settings.max_body_bytes + 10) + b"]"
    assert post_events(client, key, big).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536
        yield b"]"

    streamed = post_events(client, key, chunks())
    assert streamed.status_code == 413
    assert pending(r, settings) == 0


def test_content_type(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    _, key = create_integration(client)
    body = orjson.dumps(fixture("conversation_create"))
    for ctype in ("text/plain", "application/x-www-form-urlencoded", ""):
        answer = post_events(client, key, body, **{"Content-Type": ctype})
        assert answer.status_code == 415
    ok = post_events(
        client,
        key,
        fixture("conversation_create"),
        **{"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 202
    assert pending(r, settings) == 1


def test_iparams_never_reach_redis(client: TestClient, r: redis.Redis, settings: Settings) -> None:
    _, key = create_integration(client)
    events = [
        conv_event(f"chat-{i}", "resolved", at("2026-11-23T08:00") + i, ("g1", "S"))
        for i in range(50)
    ]
    assert all(IPARAMS_MARKER in str(e["iparams"]) for e in events)
    assert post_events(client, key, events).status_code == 202
    stored = all_stored_bytes(r)
    assert b"chat-1" in stored  # the scan does see event data
    assert IPARAMS_MARKER.encode() not in stored
    assert key.encode() not in stored
    assert b"fc-secret-KEY-123" not in stored  # the Freshchat key is encrypted at rest


def test_503_when_redis_is_down_and_recovery_without_restart() -> None:
    server = RedisServer()
    try:
        settings = make_settings(server.url)
        with TestClient(create_app(settings)) as client:
            _, key = create_integration(client)
            body = fixture("conversation_create")
            assert post_events(client, key, body).status_code == 202
            server.kill()
            down = post_events(client, key, body)
            assert down.status_code == 503 and down.headers["retry-after"].isdigit()
            server.start()
            assert post_events(client, key, body).status_code == 202
            assert pending(server.client(), settings) == 2  # the 202s, and only them
    finally:
        server.stop()


def test_503_after_one_timeout_when_redis_hangs() -> None:
    """A Redis that holds the connection but does not answer (SIGSTOP: a stuck disk, a
    paused VM) becomes a 503 with Retry-After after one timeout, not a request that hangs
    while the client retries; once Redis answers again, ingestion goes on."""
    import signal
    import time

    from app.main import REDIS_TIMEOUT_S

    server = RedisServer()
    assert server.proc is not None
    try:
        settings = make_settings(server.url)
        with TestClient(create_app(settings)) as client:
            _, key = create_integration(client)
            body = fixture("conversation_create")
            assert post_events(client, key, body).status_code == 202
            server.proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                hung = post_events(client, key, body)
                took = time.monotonic() - started
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert hung.status_code == 503 and hung.headers["retry-after"].isdigit()
            assert took < REDIS_TIMEOUT_S + 1
            assert post_events(client, key, body).status_code == 202
            # The stalled write may still land once Redis wakes (a 503 asks the sender to
            # retry, and a repeated event changes no count), but it is not sent twice.
            assert pending(server.client(), settings) in (2, 3)
    finally:
        server.stop()


def test_503_when_redis_refuses_writes() -> None:
    server = RedisServer()
    try:
        settings = make_settings(server.url)
        with TestClient(create_app(settings)) as client:
            _, key = create_integration(client)
            body = fixture("conversation_create")
            assert post_events(client, key, body).status_code == 202
            admin = server.client()
            admin.config_set("maxmemory", "1")
            oom = post_events(client, key, body)
            assert oom.status_code == 503
            admin.config_set("maxmemory", "0")
            admin.config_set("min-replicas-to-write", "1")
            no_replicas = post_events(client, key, body)
            assert no_replicas.status_code == 503
            admin.config_set("min-replicas-to-write", "0")
            assert post_events(client, key, body).status_code == 202
            assert pending(admin, settings) == 2
    finally:
        server.stop()


def test_group_commit_batches_requests_but_keeps_each_one_apart(redis_server: RedisServer) -> None:
    """Many concurrent requests share one script call per shard; a revoked key or a rate
    limit refuses only its own request, and every stored request is stored whole."""
    import asyncio

    from redis.asyncio import Redis

    from app.commit import GroupCommit, Write
    from app.redis_keys import RedisKeys

    settings = make_settings(redis_server.url, rate_limit_events_per_second=1, rate_limit_burst=3)
    keys = RedisKeys(settings.key_prefix)
    sync = redis_server.client()
    sync.flushall()
    for iid in ("aaaa", "bbbb"):
        sync.hset(keys.active_api_keys(0, iid), f"hash-{iid}", "k")
    scheduled: list[int] = []

    async def run() -> list[StoreOutcome]:
        client = Redis.from_url(settings.redis_url)
        commit = GroupCommit(client, settings, scheduled.append)
        writes = [
            Write(0, "aaaa", "hash-aaaa", [b'["aaaa","c1",0,1,"",""]', b'["aaaa","c2",0,1,"",""]']),
            Write(0, "bbbb", "hash-revoked", [b'["bbbb","c3",0,1,"",""]']),
            Write(0, "aaaa", "hash-aaaa", [b'["aaaa","c4",0,1,"",""]', b'["aaaa","c5",0,1,"",""]']),
            Write(0, "bbbb", "hash-bbbb", [b'["bbbb","c6",0,1,"",""]']),
        ]
        try:
            return list(await asyncio.gather(*(commit.store(w) for w in writes)))
        finally:
            await client.aclose()

    codes = [outcome.stored for outcome in asyncio.run(run())]
    assert codes == [Stored.OK, Stored.KEY_NOT_ACTIVE, Stored.RATE_LIMITED, Stored.OK]
    entries: Any = sync.xrange(keys.stream(0))
    stored = [orjson.loads(f[b"e"])[1] for _, f in entries]
    assert stored == ["c1", "c2", "c6"]
    assert scheduled == [0]


def _request_lines(err: str, path: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(x) for x in err.splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("msg") == "request" and x["path"] == path]


def test_each_request_gets_one_log_line_with_its_fields(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """The events endpoint writes its own line (it runs ahead of the RequestLog layer);
    other routes keep theirs; no request is logged twice."""
    from app.logs import REQUEST_LINES

    iid, key = create_integration(client)
    capsys.readouterr()
    assert post_events(client, key, fixture("conversation_create")).status_code == 202
    assert post_events(client, key, b"{").status_code == 400
    assert client.get("/healthz").status_code == 200
    REQUEST_LINES.flush()
    err = capsys.readouterr().err
    ok, bad = _request_lines(err, EVENTS)
    assert ok["status"] == 202 and ok["integration"] == iid and ok["accepted"] == 1
    assert bad["status"] == 400 and bad["reason"] == "invalid" and bad["method"] == "POST"
    assert len(_request_lines(err, "/healthz")) == 1
    assert key not in err


def test_events_route_also_served_through_starlette_routing(
    settings: Settings, r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Behind a path prefix (root_path) the fast dispatch does not match; the routed
    endpoint answers the same way and the request is logged once."""
    from app.logs import REQUEST_LINES

    app = create_app(settings)
    with TestClient(app) as client:
        _, key = create_integration(client)
    body = orjson.dumps(fixture("conversation_update_resolved"))
    message = {"type": "http.request", "body": body, "more_body": False}
    capsys.readouterr()
    status, out = asgi_post(app, key, [message], "/injixo" + EVENTS, "/injixo")
    assert status == 202 and orjson.loads(out) == {"accepted": 1, "ignored": 0}
    status, _ = asgi_post(app, "wrong", [message], "/injixo" + EVENTS, "/injixo")
    assert status == 401
    assert pending(r, settings) == 1
    REQUEST_LINES.flush()
    lines = _request_lines(capsys.readouterr().err, "/injixo" + EVENTS)
    assert [x["status"] for x in lines] == [202, 401]


def asgi_post(
    app: Any, key: str, messages: list[dict[str, Any]], path: str = EVENTS, root_path: str = ""
) -> tuple[int, bytes]:
    """POST straight to the ASGI app, the body as the given receive messages."""
    import asyncio

    scope = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": root_path, "http_version": "1.1", "scheme": "http",
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    queue = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def call() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(call())
    return sent[0]["status"], sent[1]["body"]


def test_unexpected_failure_is_a_json_500_and_the_endpoint_keeps_serving(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.ingest

    _, key = create_integration(client)

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.ingest, "to_compacts", broken)
    failed = post_events(client, key, fixture("conversation_create"))
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal server error", "reason": "internal"}
    monkeypatch.undo()
    assert post_events(client, key, fixture("conversation_create")).status_code == 202


def test_body_in_chunks_and_early_disconnect(settings: Settings, r: redis.Redis) -> None:
    """A body that arrives in pieces is stored whole; a client that leaves mid-body gets a
    400 and nothing is stored."""

    app = create_app(settings)
    with TestClient(app) as client:
        _, key = create_integration(client)
    body = orjson.dumps([fixture("conversation_create"), fixture("conversation_update_resolved")])
    pieces = [body[:7], body[7:1000], body[1000:]]

    chunks = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    status, out = asgi_post(app, key, chunks)
    assert status == 202 and orjson.loads(out) == {"accepted": 2, "ignored": 0}
    assert pending(r, settings) == 2
    gone: list[dict[str, Any]] = [chunks[0], {"type": "http.disconnect"}]
    status, out = asgi_post(app, key, gone)
    assert status == 400 and b"disconnected" in out
    assert pending(r, settings) == 2


def test_group_name_with_newlines_survives_the_batched_write(
    client: TestClient, r: redis.Redis, settings: Settings
) -> None:
    """Events travel to the ingest script in one newline-separated argument: a newline in
    a field must not split an event."""
    _, key = create_integration(client)
    name = "Line one\nline two\r\n\n"
    event = conv_event("chat-nl", "resolved", at("2026-11-23T08:00"), ("g-nl", name))
    assert post_events(client, key, [event, event]).status_code == 202
    keys = RedisKeys(settings.key_prefix)
    entries: list[Any] = []
    for shard in range(settings.shards):
        entries += r.xrange(keys.stream(shard))  # type: ignore[arg-type]
    assert len(entries) == 2
    assert all(orjson.loads(fields[b"e"])[5] == name for _, fields in entries)


def test_group_commit_reloads_its_script_after_redis_forgets_it(
    redis_server: RedisServer,
) -> None:
    """After SCRIPT FLUSH (as after a Redis restart) both the single-call path and the
    pipelined several-shards path fall back to EVAL and store everything."""
    import asyncio

    from redis.asyncio import Redis

    from app.commit import GroupCommit, Write
    from app.redis_keys import RedisKeys

    settings = make_settings(redis_server.url)
    keys = RedisKeys(settings.key_prefix)
    sync = redis_server.client()
    sync.flushall()
    for shard in (0, 1):
        sync.hset(keys.active_api_keys(shard, f"i{shard}"), f"hash-{shard}", "k")

    def write(shard: int, chat: str) -> Write:
        return Write(
            shard, f"i{shard}", f"hash-{shard}", [f'["i{shard}","{chat}",0,1,"",""]'.encode()]
        )

    async def run() -> list[StoreOutcome]:
        client = Redis.from_url(settings.redis_url)
        commit = GroupCommit(client, settings, lambda shard: None)
        try:
            codes = [await commit.store(write(0, "warm"))]
            sync.script_flush()
            codes.append(await commit.store(write(0, "alone")))
            sync.script_flush()
            codes += await asyncio.gather(commit.store(write(0, "a")), commit.store(write(1, "b")))
            return codes
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [STORED_OK] * 4
    assert sync.xlen(keys.stream(0)) == 3 and sync.xlen(keys.stream(1)) == 1
