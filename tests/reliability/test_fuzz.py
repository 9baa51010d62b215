"""Over 10,000 generated hostile inputs against a real web process: schema-driven fuzzing of
every operation in /openapi.json (schemathesis, positive and negative data, right, wrong and
missing tokens) plus raw bytes, deep nesting, huge numbers, invalid UTF-8, NUL bytes, huge
strings, wrong content types, and slow, partial or malformed HTTP over a raw socket.
Only 4xx (or the documented 2xx) come back, nothing is stored for a reject, and the worker
applies what was accepted and keeps counting afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import redis
import requests
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis as AsyncRedis

from app.integration import NewIntegration
from app.integrations import Integrations
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.e2e.processes import Process, Web
from tests.freshchat_standin import FreshchatStandIn
from tests.reliability.harness import (
    FIGURES,
    WATCH,
    create_integration,
    create_key,
    processed,
    stack,
)
from tests.support import (
    ADMIN_TOKEN,
    EVENTS,
    NO_OUTSIDE,
    READER_TOKEN,
    base_day,
    bearer,
    conv_event,
    day_ms,
    iso,
    pending,
    read_counts,
    sign,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning"),
]

SCALE = float(os.environ.get("RELIABILITY_FUZZ_SCALE", "1"))
SCHEMA_CASES = {"positive": int(260 * SCALE), "negative": int(200 * SCALE)}  # per operation
TOKENS = ("right", "right", "right", "none", "wrong", "other")


@dataclass
class Tally:
    """Every answer, by origin and status; what 202s accepted; any 5xx."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    accepted: int = 0
    inputs: int = 0
    server_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, origin: str, status: int, body: bytes, what: str) -> None:
        """Record one answer (status 0: the connection closed without an HTTP answer)."""
        with self.lock:
            self.inputs += 1
            self.statuses[(origin, status)] += 1
            if status >= 500:
                self.server_errors.append(f"{origin} {status} {what[:200]!r} -> {body[:300]!r}")
            if origin.startswith("events") and status == 202:
                self.accepted += int(orjson.loads(body)["accepted"])
            if status >= 400:
                WATCH.error_bodies.append(body)


@dataclass
class Target:
    """The web process and the credentials the fuzzers use."""

    web: Web
    key: str  # an injixo API key of the integration events go to
    iid: str
    pool: list[str]  # integrations admin operations may change or delete
    tally: Tally = field(default_factory=Tally)


@pytest.fixture
def standin() -> Iterator[FreshchatStandIn]:
    """A stand-in Freshchat on loopback for the workers' group listings (no groups)."""
    server = FreshchatStandIn()
    yield server
    server.stop()


def _target_integration(settings: Settings, domain: str) -> tuple[str, str]:
    """The events integration points at the stand-in (needs the insecure setting, which the
    fuzzed web process does not have: its domain check stays strict)."""

    async def run() -> tuple[str, str]:
        client = AsyncRedis.from_url(settings.redis_url)
        try:
            insecure = settings.model_copy(update={"freshchat_allow_insecure": True})
            integrations = Integrations(client, insecure)
            new = NewIntegration(
                name="Fuzz target", freshchat_domain=domain, freshchat_api_key="fc-good-key"
            )
            created = await integrations.create(new, None)
            key = await integrations.create_key(created.id)
            return created.id, key["api_key"]
        finally:
            await client.aclose()

    iid, key = asyncio.run(run())
    WATCH.add(key)
    return iid, key


# --- schemathesis ----------------------------------------------------------------------------


def run_schemathesis(target: Target) -> int:
    """Every operation of the served document, positive and negative; returns the case count."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(target.web.url + "/openapi.json")
    session = requests.Session()
    cases = 0
    try:
        for result in schema.get_all_operations():
            operation: Any = result.ok()  # type: ignore[union-attr]  # Err raises, as it should
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                cases += _fuzz_operation(target, session, operation, mode.value)
    finally:
        session.close()
    return cases


def _fuzz_operation(target: Target, session: Any, operation: Any, mode: str) -> int:
    """Hypothesis drives schemathesis' strategy for one operation; returns the case count."""
    from schemathesis import GenerationMode

    path, method = operation.path, operation.method.upper()
    origin = "events" if path == EVENTS else f"{method} {path}"
    security = (operation.definition.raw.get("security") or [{}])[0]
    role = next(iter(security), "")
    count = 0

    @hsettings(
        max_examples=SCHEMA_CASES[mode],
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)), pick=st.randoms())
    def fuzz(case: Any, pick: random.Random) -> None:
        nonlocal count
        headers = _auth(target, role, pick.choice(TOKENS), pick)
        if "iid" in (case.path_parameters or {}) and pick.random() < 0.6:
            case.path_parameters["iid"] = (
                target.iid if role == "reader" else pick.choice(target.pool)
            )
        if method in ("POST", "PATCH") and isinstance(case.body, dict):
            case.body["verify"] = False  # no call to a real Freshchat from the fuzzer
        response = case.call(base_url=target.web.url, session=session, headers=headers, timeout=15)
        body = response.content
        target.tally.answer(origin, response.status_code, body, repr(case)[:300])
        if response.status_code == 201 and b"api_key" in body:
            WATCH.add(orjson.loads(body)["api_key"])
        if response.status_code < 500:
            _conforms(case, response, target)
        count += 1

    try:
        fuzz()
    except Exception as exc:  # an operation without anything to negate is not a failure
        if "Unsatisfiable" not in type(exc).__name__ and "negative" not in str(exc).lower():
            raise
        print(f"schemathesis: {origin} {mode}: {type(exc).__name__}: {str(exc)[:200]}")
    return count


def _auth(target: Target, role: str, choice: str, pick: random.Random) -> dict[str, str]:
    right = {"admin": ADMIN_TOKEN, "reader": READER_TOKEN, "apiKey": target.key}
    if role == "freshchatSignature":  # a signature, not a token: the webhook fuzz covers it
        return {} if choice == "none" else {"X-Freshchat-Signature": sign(b"{}")}
    if choice == "none" or (choice == "right" and not role):
        return {}
    if choice == "wrong":
        return {"Authorization": "Bearer " + "".join(pick.choices("abcXYZ019_-", k=40))}
    if choice == "other":
        others = [t for r, t in right.items() if r != role]
        return {"Authorization": "Bearer " + pick.choice(others)}
    return {"Authorization": "Bearer " + right[role]}


def _conforms(case: Any, response: Any, target: Target) -> None:
    """Answers match the document: documented status (405 aside), JSON bodies per schema."""
    from schemathesis.checks import load_all_checks
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    if response.content == b"Invalid HTTP request received.":
        return  # uvicorn's own answer to a malformed header: no route ran, so no schema applies
    load_all_checks()
    checks = [response_schema_conformance, content_type_conformance]
    if response.status_code != 405:  # a fuzzed path parameter with "/" can reach another route
        checks.append(status_code_conformance)
    try:
        case.validate_response(response, checks=checks)
    except (Exception, FailureGroup) as exc:
        with target.tally.lock:
            target.tally.server_errors.append(f"nonconforming {response.status_code}: {exc}"[:800])


# --- raw inputs ------------------------------------------------------------------------------


def _valid(rng: random.Random, base: int) -> dict[str, Any]:
    chat = str(uuid.UUID(int=rng.getrandbits(128)))
    return conv_event(
        chat, rng.choice(["resolved", "new", "spam"]), base + rng.randrange(86_400_000)
    )


HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63, -(2**63) - 1, 1.5e308, -1e-320, "", " ", "\x00", "\u0000x",
    "\ud7ff\ue000", "💥" * 1000, "A" * 70_000, [], {}, [[]], {"": {}}, "2026-13-45T99:99:99Z",
    "0001-01-01T00:00:00", "9999-12-31T23:59:59+14:00", "NaN", "Infinity", "1e400", "-0",
    "  1763885313  ", "\\u0000", "<script>", "' OR 1=1 --", "../../etc/passwd", "%00", "\r\n",
]  # fmt: skip

FIELDS = [
    ("event",), ("timestamp",), ("data",), ("data", "conversation"),
    ("data", "conversation", "conversation_id"), ("data", "conversation", "status"),
    ("data", "conversation", "assigned_group_id"), ("data", "conversation", "resolved_time"),
    ("data", "conversation", "is_spam"), ("data", "associations"),
    ("data", "associations", "group"), ("data", "associations", "group", "name"),
    ("data", "associations", "group", "id"), ("data", "changes", "model_changes"),
    ("data", "changes", "model_changes", "status"), ("iparams",),
]  # fmt: skip

RAW_LITERALS = [  # JSON text that no JSON library would produce
    b'{"event":"onConversationUpdate","timestamp":1e400}',
    b'{"event":"onConversationUpdate","timestamp":' + b"9" * 400 + b"}",
    b'{"event":"onConversationUpdate","timestamp":-' + b"9" * 400 + b"}",
    b'{"event":"onConversationCreate","timestamp":NaN}',
    b'{"event":"\xff\xfe\xfd","timestamp":1}',
    b'{"event":"onConversationCreate","data":{"conversation":{"conversation_id":"\\ud800"}}}',
    b'{"event":"onConversationCreate","data":{"conversation":{"conversation_id":"\xed\xa0\x80"}}}',
    b"\xef\xbb\xbf{}",
    b'{"event":{},"timestamp":1,"data":{"conversation":{"conversation_id":"x"}}}',
    b'[{"event":["onConversationUpdate"],"timestamp":1}]',
    b'{"event":"onConversationUpdate","timestamp":1763885313,"data":{"conversation":'
    b'{"conversation_id":"c","status":"resolved","resolved_time":"0001-01-01T00:00:00+14:00"}}}',
    b'{"event":"onConversationUpdate","timestamp":1763885313,"data":{"conversation":'
    b'{"conversation_id":"c","status":"resolved"},"associations":{"group":{"id":"g",'
    b'"name":"\\u0000x"}}}}',
    b"\x00" * 100,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"[" * 100_000,
    b"{" * 1000,
    b'"' + b"\\" * 10_001 + b'"',
    b'{"event":"onConversationCreate","event":"onConversationUpdate"}',
    b"[" + b"{}," * 600 + b"{}]",
    b"[" + b'{"event":"onMessageCreate"},' * 499 + b'{"event":"onMessageCreate"}]',
    b"",
    b" ",
    b"null",
    b"true",
    b"1",
    b'"text"',
    b"[null]",
    b"[[]]",
]


def raw_bodies(rng: random.Random, base: int, n: int) -> Iterator[tuple[str, bytes, str]]:
    """(label, body, content type) hostile request bodies for the events endpoint."""
    for body in RAW_LITERALS:
        yield "literal", body, "application/json"
    valid = orjson.dumps(_valid(rng, base))
    for i in range(n):
        kind = i % 6
        if kind == 0:  # random bytes
            yield "bytes", rng.randbytes(rng.choice([1, 7, 100, 3000])), "application/json"
        elif kind == 1:  # a valid payload with bytes flipped, cut or inserted
            mutable = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                at = rng.randrange(len(mutable))
                op = rng.randrange(3)
                if op == 0:
                    mutable[at] = rng.randrange(256)
                elif op == 1:
                    del mutable[at : at + rng.randrange(1, 40)]
                else:
                    mutable[at:at] = rng.randbytes(rng.randrange(1, 8))
            yield "mutated", bytes(mutable), "application/json"
        elif kind in (2, 3):  # a valid payload with one field set to a hostile value
            event = _valid(rng, base)
            path = rng.choice(FIELDS)
            node = event
            for part in path[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[path[-1]] = rng.choice(HOSTILE_VALUES)
            events: Any = event if rng.random() < 0.7 else [_valid(rng, base), event]
            text_ = json.dumps(events, ensure_ascii=rng.random() < 0.5)  # big ints too
            yield "field", text_.encode("utf-8", "surrogatepass"), "application/json"
        elif kind == 4:  # deep or wide nesting
            depth = rng.choice([10, 500, 1100, 5000, 100_000])
            opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            body = opener * depth + b"0" + closer * depth
            yield "nesting", body, "application/json"
        else:  # wrong content types and encodings
            ctype = rng.choice(
                [
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "",
                    "application/json; charset=utf-16",
                    "application/JSON",
                    "application/problem+json",
                    "application/json; charset=bogus",
                    "*/*",
                ]
            )
            body = valid.decode().encode("utf-16") if "utf-16" in ctype else valid
            yield "ctype", body, ctype


def run_raw_events(target: Target, rng: random.Random, n: int, base: int) -> int:
    """Hostile bodies to the events endpoint, from 4 threads; returns how many."""
    items = list(raw_bodies(rng, base, n))

    def send(chunk: list[tuple[str, bytes, str]]) -> None:
        with httpx.Client(base_url=target.web.url, timeout=30) as client:
            for label, body, ctype in chunk:
                headers = {"Authorization": f"Bearer {target.key}"}
                if ctype:
                    headers["Content-Type"] = ctype
                try:
                    response = client.post(EVENTS, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    target.tally.answer("events-raw", 0, repr(exc).encode(), label)
                    print(f"events-raw: no answer to {label} {ctype!r} {body[:60]!r}: {exc!r}")
                    continue
                target.tally.answer("events-raw", response.status_code, response.content, label)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, [items[i::4] for i in range(4)]))
    return len(items)


def run_raw_queries(target: Target, rng: random.Random, n: int) -> int:
    """Hostile query strings and headers for the read and admin API."""
    values = [
        "", "2026-11-23T00:00:00Z", "2026-11-23T00:07:00Z", "1e400", "9" * 400, "-1",
        "2026-02-30T00:00:00Z", "0000-00-00", "now", "\x00", "%00", "🚀", "15", "30", "60",
        "7", "Asia/Kolkata", "../../etc/passwd", "Etc/GMT+14", "UTC\x00", "A" * 5000,
        "2026-11-23T00:00:00+05:30", "2025-01-01T00:00:00Z", "2026-11-23T00:00:00",
    ]  # fmt: skip
    with httpx.Client(base_url=target.web.url, timeout=30) as client:
        for i in range(n):
            headers: dict[str, Any]
            params = {
                k: rng.choice(values)
                for k in ("from", "to", "interval", "tz", "queue", "format")
                if rng.random() < 0.8
            }
            iid = rng.choice([target.iid, target.iid, "nope", "%2e%2e", "A" * 300])
            path = f"/v1/integrations/{iid}/" + rng.choice(["contacts", "queues"])
            token = rng.choice([READER_TOKEN, ADMIN_TOKEN, target.key, "x" * 10_000, "é"])
            headers = {"Authorization": f"Bearer {token}".encode()}  # raw UTF-8 bytes too
            if i % 5 == 0:
                headers["Accept"] = rng.choice(["text/csv", "*/*", "application/xml"])
            try:
                response = client.get(path, params=params, headers=headers)
            except httpx.HTTPError as exc:  # the HTTP layer hung up (e.g. a 30 KB request line)
                target.tally.answer("read-raw", 0, repr(exc).encode(), str(params))
                continue
            target.tally.answer("read-raw", response.status_code, response.content, str(params))
    return n


# --- raw sockets -------------------------------------------------------------------------------


def _http(target: Target, payload: Callable[[socket.socket], None], read: bool = True) -> int:
    """Send something over a fresh connection; the status line's code, or 0 if none."""
    with socket.create_connection(("127.0.0.1", target.web.port), timeout=10) as sock:
        try:
            payload(sock)
        except OSError:
            return 0
        if not read:
            return 0
        try:
            head = sock.recv(4096)
        except OSError:
            return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def run_raw_sockets(target: Target, rng: random.Random, base: int) -> int:
    """Partial, slow, lying and malformed HTTP; returns how many inputs."""
    body = orjson.dumps(_valid(rng, base))
    auth = f"Authorization: Bearer {target.key}\r\n".encode()

    def head(length: int | str, extra: bytes = b"") -> bytes:
        return (
            b"POST /v1/freshchat/events HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {length}\r\n".encode() + extra + b"\r\n"
        )  # fmt: skip

    def partial(sock: socket.socket) -> None:  # promises more than it sends, then hangs up
        sock.sendall(head(len(body) + 500) + body[: rng.randrange(len(body))])
        sock.shutdown(socket.SHUT_WR)

    def trickle(sock: socket.socket) -> None:  # slow but complete
        sock.sendall(head(len(body)))
        for at in range(0, len(body), 200):
            sock.sendall(body[at : at + 200])
            time.sleep(0.01)

    def chunked_bogus(sock: socket.socket) -> None:
        sock.sendall(
            b"POST /v1/freshchat/events HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + rng.choice([b"zz\r\n{}\r\n0\r\n\r\n", b"ffffffffff\r\n{", b"2\r\n{}\r\n"])
        )  # fmt: skip
        sock.shutdown(socket.SHUT_WR)

    def lying_length(sock: socket.socket) -> None:  # says less than it sends
        sock.sendall(head(10) + body)

    def huge_length(sock: socket.socket) -> None:
        sock.sendall(head(10**30))

    def negative_length(sock: socket.socket) -> None:
        sock.sendall(head(-5) + body)

    def big_header(sock: socket.socket) -> None:
        sock.sendall(head(len(body), b"X-Junk: " + b"a" * 70_000 + b"\r\n") + body)

    def garbage(sock: socket.socket) -> None:
        sock.sendall(rng.randbytes(rng.randrange(1, 2000)) + b"\r\n\r\n")

    def headers_only(sock: socket.socket) -> None:
        sock.sendall(b"POST /v1/freshchat/events HTTP/1.1\r\nHost: x\r\n")
        sock.shutdown(socket.SHUT_WR)

    kinds: list[tuple[str, Callable[[socket.socket], None], bool]] = [
        ("partial", partial, False),
        ("trickle", trickle, True),
        ("chunked", chunked_bogus, True),
        ("lying", lying_length, True),
        ("huge-length", huge_length, True),
        ("negative-length", negative_length, True),
        ("big-header", big_header, True),
        ("garbage", garbage, True),
        ("headers-only", headers_only, False),
    ]
    n = 0
    for round_ in range(25):
        for label, send, read in kinds:
            if label == "trickle" and round_ % 5:
                continue  # slow: a few are enough
            status = _http(target, send, read)
            n += 1
            # 0: the server closed the connection without an answer (what HTTP servers do
            # with bytes that are not HTTP), never a 5xx.
            target.tally.answer(f"socket-{label}", status, b"", label)
            if status == 202:  # a complete, valid single event despite the odd delivery
                with target.tally.lock:
                    target.tally.accepted += 1
    # Many idle half-open connections at once (slowloris-like), then a normal request.
    socks = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", target.web.port), timeout=10)
        s.sendall(head(len(body)) + body[:10])
        socks.append(s)
    ok = httpx.post(
        target.web.url + EVENTS,
        content=body,
        headers={"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"},
        timeout=15,
    )
    target.tally.answer("events-during-slowloris", ok.status_code, ok.content, "normal")
    assert ok.status_code == 202
    for s in socks:
        s.close()
    return n + 101


# --- the test ------------------------------------------------------------------------------


def waiting_entries(r: redis.Redis, settings: Settings) -> list[list[Any]]:
    """Decoded entries still in the shard streams."""
    keys = RedisKeys(settings.key_prefix)
    out = []
    for shard in range(settings.shards):
        entries: Any = r.xrange(keys.stream(shard))
        for _, fields in entries:
            out.append(orjson.loads(fields[b"e"]))
    return out


def test_ten_thousand_hostile_inputs(
    settings: Settings, r: redis.Redis, standin: FreshchatStandIn
) -> None:
    rng = random.Random(1123)
    base = day_ms(base_day())
    began = time.monotonic()
    iid, key = _target_integration(settings, standin.domain)
    with stack(settings, NO_OUTSIDE) as s:
        web = s.web()
        pool = [
            create_integration(web.url, f"Pool {n}", f"fc-pool-{n}-{uuid.uuid4().hex}")
            for n in range(3)
        ]
        for p in pool:
            create_key(web.url, p)
        target = Target(web, key, iid, pool)
        schema_cases = run_schemathesis(target)
        raw = run_raw_events(target, rng, int(6000 * SCALE), base)
        raw += run_raw_queries(target, rng, 800)
        raw += run_raw_sockets(target, rng, base)
        tally = target.tally
        assert web.proc.poll() is None, "the web process died"
        assert httpx.get(web.url + "/healthz", timeout=5).status_code == 200
        assert not tally.server_errors, "\n".join(tally.server_errors[:20])
        # Nothing but what the 202s accepted reached the streams; no worker ran yet.
        assert processed(r, settings) == (0, 0)
        stored = pending(r, settings)
        assert stored == tally.accepted, (stored, tally.accepted)
        keys = RedisKeys(settings.key_prefix)
        assert all(r.xlen(keys.dead(sh)) == 0 for sh in range(settings.shards))

        # The worker applies what was accepted: nothing dead-lettered, and what is left waits
        # (by design) for the integration's next listing of Freshchat's groups (one a minute).
        burst = s.worker("--burst", **NO_OUTSIDE)
        assert burst.proc.wait(timeout=120) == 0, burst.output()[-3000:]
        applied, dead = processed(r, settings)
        waiting = waiting_entries(r, settings)
        assert dead == 0, [r.xrange(keys.dead(sh)) for sh in range(settings.shards)]
        assert applied + len(waiting) == stored
        assert all(e[2] == 1 and e[4] and not e[5] for e in waiting), waiting[:5]
        assert standin.group_gets() == []  # never the per-id route
        assert 1 <= len(standin.list_gets()) <= 3  # one listing a minute, whatever many ids

        # Unharmed: a normal event afterwards is counted.
        queue = f"After fuzz {uuid.uuid4().hex[:8]}"
        when = base + 13 * 3600 * 1000
        event = conv_event(str(uuid.uuid4()), "resolved", when, ("gafter", queue))
        after = httpx.post(web.url + EVENTS, json=event, headers=bearer(key), timeout=15)
        assert after.status_code == 202
        again = Process(settings, "worker", "--burst", extra_env=NO_OUTSIDE)
        WATCH.logs.append(again.log)
        assert again.proc.wait(timeout=60) == 0, again.output()[-3000:]
        slot = iso(when - when % 900_000)[:16] + "Z"
        assert read_counts(web.url, iid).get((slot, queue)) == 1
        assert not WATCH.scan(r)
    inputs = schema_cases + raw
    assert inputs >= 10_000 * min(SCALE, 1), inputs
    by_status: Counter[int] = Counter()
    for (_, status), n in tally.statuses.items():
        by_status[status] += n
    FIGURES.record(
        "fuzz",
        inputs=inputs,
        schemathesis_cases=schema_cases,
        raw_inputs=raw,
        statuses={str(k): v for k, v in sorted(by_status.items())},
        accepted_events=tally.accepted,
        applied=applied,
        waiting_for_group_name=len(waiting),
        server_errors=len(tally.server_errors),
        seconds=round(time.monotonic() - began, 1),
    )
    print(FIGURES.line())
    print(json.dumps({f"{o} {st}": n for (o, st), n in sorted(tally.statuses.items())}, indent=0))
