"""Test support in one place: settings and tokens, realistic Freshworks payloads and time
helpers, a client helper that posts an authenticated event, the storage path without HTTP,
and the oracles the counts are checked against."""

from __future__ import annotations

import base64
import copy
import functools
import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
import orjson
import redis
from cryptography.fernet import Fernet

from app.events import parse_body, to_compacts
from app.lua import SLOT_MS
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from workers.applier import Applier

if TYPE_CHECKING:  # the bench imports this module too, without the test-only httpx2
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "freshworks"
WEBHOOK_FIXTURES = ROOT.parent / "shared" / "fixtures" / "freshchat-webhooks"

# --- settings and credentials --------------------------------------------------------------

ADMIN_TOKEN = "test-admin-token-0123456789"
READER_TOKEN = "test-reader-token-0123456789"
ENCRYPTION_KEY = Fernet.generate_key().decode()
IPARAMS_MARKER = "IPARAMS-MARKER-7f3a9c"
EVENTS = "/v1/freshchat/events"
NO_OUTSIDE = {  # nothing the processes do may leave loopback
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def bearer(token: str) -> dict[str, str]:
    """An Authorization header carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)
READER = bearer(READER_TOKEN)


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    """Settings for tests (no .env file is read)."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "admin_token": ADMIN_TOKEN,
        "reader_tokens": READER_TOKEN,
        "encryption_key": ENCRYPTION_KEY,
        "drain_lease_seconds": 2.0,
        "janitor_interval_seconds": 0.5,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def env_for(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce these settings in a subprocess."""
    return {
        "REDIS_URL": settings.redis_url,
        "ADMIN_TOKEN": settings.admin_token,
        "READER_TOKENS": settings.reader_tokens,
        "ENCRYPTION_KEY": settings.encryption_key,
        "DRAIN_LEASE_SECONDS": str(settings.drain_lease_seconds),
        "JANITOR_INTERVAL_SECONDS": str(settings.janitor_interval_seconds),
        "FRESHCHAT_ALLOW_INSECURE": str(settings.freshchat_allow_insecure).lower(),
        "SHARDS": str(settings.shards),
        "REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "RQ_REDIS_URL": settings.rq_redis_url,
        "REDIS_REPLICA_ACKS": str(settings.redis_replica_acks),
        "REDIS_REPLICA_WAIT_MS": str(settings.redis_replica_wait_ms),
    }


# --- time ----------------------------------------------------------------------------------


def at(text: str) -> int:
    """Epoch milliseconds of an ISO time (`2026-11-23T08:07Z`)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    """ISO 8601 (ms precision, Z) of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def base_day() -> datetime:
    """Yesterday 00:00 UTC: events there are never in the future and well inside retention."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def day_ms(day: datetime) -> int:
    """Epoch milliseconds of a datetime."""
    return int(day.timestamp() * 1000)


def wait_until(
    check: Callable[..., object], timeout: float, what: str, every: float = 0.05
) -> None:
    """Poll `check()` until true, else fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# --- payloads ------------------------------------------------------------------------------


def fixture(name: str) -> dict[str, Any]:
    """One of the shared sample payloads."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


_BASE = fixture("conversation_update_resolved") if FIXTURES.exists() else {}


def conv_event(
    chat: str,
    status: str,
    time_ms: int,
    group: tuple[str, str] | None = None,
    *,
    event: str = "onConversationUpdate",
    resolved_time_ms: int | None = None,
    group_id_only: str | None = None,
    **conversation: Any,
) -> dict[str, Any]:
    """A conversation event shaped like the platform's (~2.5 KB), with iparams set."""
    payload = copy.deepcopy(_BASE)
    payload["event"] = event
    payload["timestamp"] = time_ms
    payload["iparams"] = {"injixo_api_key": IPARAMS_MARKER, "injixo_url": IPARAMS_MARKER}
    conv = payload["data"]["conversation"]
    conv["conversation_id"] = chat
    conv["status"] = status
    conv.pop("resolved_time", None)
    if resolved_time_ms is not None:
        conv["resolved_time"] = iso(resolved_time_ms)
    assoc = payload["data"]["associations"]
    if group is not None:
        conv["assigned_group_id"] = group[0]
        assoc["group"] = {"id": group[0], "name": group[1], "description": "", "routing_type": "X"}
    else:
        conv["assigned_group_id"] = group_id_only
        assoc.pop("group", None)
    payload["data"]["changes"] = {"model_changes": {"status": ["assigned", status]}}
    conv.update(conversation)
    return payload


G1, G2 = ("g1", "Customer Support"), ("g2", "Billing")


def worked_example() -> list[dict[str, Any]]:
    """The §4 table's deliveries, in delivery order."""
    c = {n: str(uuid.UUID(int=n)) for n in range(1, 6)}
    resolve_c1 = conv_event(
        c[1], "resolved", at("2026-11-23T08:07:30"), G1, resolved_time_ms=at("2026-11-23T08:07")
    )
    return [
        conv_event(c[1], "new", at("2026-11-23T08:01"), None, event="onConversationCreate"),
        conv_event(c[1], "assigned", at("2026-11-23T08:02"), G1),
        resolve_c1,
        conv_event(c[2], "resolved", at("2026-11-23T08:20"), G1),
        conv_event(c[2], "reopened", at("2026-11-23T08:25"), G1),
        conv_event(c[2], "resolved", at("2026-11-23T09:10"), G2),
        conv_event(c[3], "spam", at("2026-11-23T08:40"), G1),
        conv_event(c[4], "resolved", at("2026-11-23T08:50"), None),
        conv_event(c[5], "resolved", at("2026-11-23T10:05"), G1),
        conv_event(c[5], "resolved", at("2026-11-23T09:31"), G2),
        resolve_c1,
        resolve_c1,
        resolve_c1,
    ]


WORKED_EXAMPLE_COUNTS = {
    ("2026-11-23T08:00Z", "Customer Support"): 1,
    ("2026-11-23T08:15Z", "Customer Support"): 1,
    ("2026-11-23T08:30Z", "Undefined_Queue"): 1,
    ("2026-11-23T08:45Z", "Undefined_Queue"): 1,
    ("2026-11-23T09:30Z", "Billing"): 1,
}

GROUPS = [G1, G2, ("g3", "Sales | EU: 🚀"), None]


def random_history(
    rng: random.Random,
    chat: str,
    base_ms: int,
    *,
    groups: Sequence[tuple[str, str] | None] = GROUPS,
    within_s: int = 20 * 3600,
    step_ms: int | None = None,
) -> list[dict[str, Any]]:
    """A chat's events: created within `within_s` of `base_ms`, then 1-3 changes (some
    terminal, some not), `step_ms` apart or a random 10 s - 30 min apart."""
    start = base_ms + rng.randrange(0, within_s) * 1000
    events = [conv_event(chat, "new", start, rng.choice(groups), event="onConversationCreate")]
    for step in range(rng.randrange(1, 4)):
        status = rng.choice(["assigned", "resolved", "resolved", "reopened", "spam"])
        gap = step_ms if step_ms is not None else rng.randrange(10, 1800) * 1000
        events.append(conv_event(chat, status, start + (step + 1) * gap, rng.choice(groups)))
    return events


def expected_counts(histories: list[list[dict[str, Any]]]) -> dict[tuple[str, str], int]:
    """§4 for random histories: each chat at its earliest terminal event, per 15 minutes."""
    out: dict[tuple[str, str], int] = {}
    for events in histories:
        terminal = []
        for e in events:
            status = e["data"]["conversation"]["status"]
            if status in ("resolved", "spam"):
                group = e["data"]["associations"].get("group")
                queue = group["name"] if status == "resolved" and group else "Undefined_Queue"
                terminal.append((e["timestamp"], queue))
        if terminal:
            when, queue = min(terminal)
            slot = when - when % 900_000
            k = (iso(slot)[:16] + "Z", queue)
            out[k] = out.get(k, 0) + 1
    return out


# --- HTTP ----------------------------------------------------------------------------------


ResponseT = TypeVar("ResponseT", covariant=True)


class Poster(Protocol[ResponseT]):
    """What `post_events` needs of a client: httpx's, or httpx2's (the TestClient's)."""

    def post(
        self, url: str, *, content: bytes | Iterator[bytes], headers: dict[str, str]
    ) -> ResponseT: ...


def post_events(
    client: Poster[ResponseT], api_key: str | None, body: object, **headers: str
) -> ResponseT:
    """POST events with an injixo API key (hooky's `client.webhook()`): a payload or a list
    is sent as JSON, bytes or a byte iterator as they are; `headers` override the defaults."""
    sent = {"Content-Type": "application/json"}
    if api_key is not None:
        sent.update(bearer(api_key))
    sent.update(headers)
    content = body if isinstance(body, bytes | Iterator) else orjson.dumps(body)
    return client.post(EVENTS, content=content, headers=sent)


# --- Freshchat's own webhooks (§12) -----------------------------------------------------------


def webhook_key_pem() -> str:
    """The fixtures' test public key, as Freshchat's settings page shows it."""
    return (WEBHOOK_FIXTURES / "test_public_key.pem").read_text()


@functools.cache
def _private_key(pem: bytes) -> Any:
    """A PEM private key, loaded once (loading checks the key: tens of milliseconds)."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


def sign(body: bytes, private_pem: bytes | None = None) -> str:
    """`X-Freshchat-Signature` for `body`: base64 RSA PKCS#1 v1.5 over SHA-256 (test key)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = _private_key(private_pem or (WEBHOOK_FIXTURES / "test_private_key.pem").read_bytes())
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


def webhook_event(
    action: str, conversation_id: str, time_ms: int, group_id: str | None = None
) -> dict[str, Any]:
    """A Freshchat webhook body in the fixtures' shape (`group_id`: the resolution's own
    `assigned_group_id`, or an assignment's `to_group_id`)."""
    conversation: dict[str, Any] = {
        "conversation_id": conversation_id,
        "app_id": "8f0c3b52-6a1e-4d3e-9a57-1c2b3d4e5f60",
        "status": {"conversation_resolution": "resolved"}.get(action, "assigned"),
        "assigned_agent_id": "2b6f0a7e-3c41-4f0e-8d2a-7a9b1c2d3e4f",
    }
    if group_id is not None:
        conversation["assigned_group_id"] = group_id
    data: dict[str, Any]
    if action == "conversation_resolution":
        data = {"resolve": {"resolver": "agent", "conversation": conversation}}
    elif action == "conversation_assignment":
        data = {"assignment": {"to_group_id": group_id, "conversation": conversation}}
    elif action == "conversation_reopen":
        data = {"reopen": {"reopener": "user", "conversation": conversation}}
    else:
        data = {"message": {"conversation_id": conversation_id, "message_parts": []}}
    return {
        "actor": {"actor_type": "agent", "actor_id": "2b6f0a7e-3c41-4f0e-8d2a-7a9b1c2d3e4f"},
        "action": action,
        "action_time": iso(time_ms),
        "data": data,
    }


def set_up_webhook(client: TestClient, iid: str, public_key: str | None = None) -> str:
    """Paste the test public key for the integration; returns the webhook's path."""
    answer = client.put(
        f"/v1/integrations/{iid}/webhook",
        json={"public_key": public_key or webhook_key_pem()},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    return "/v1/freshchat/webhooks/" + str(answer.json()["webhook_id"])


def post_webhook(
    client: Poster[ResponseT], path: str, body: object, signature: str | None = "", **headers: str
) -> ResponseT:
    """POST a webhook body signed with the test key ("" signs it; None sends no signature)."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Content-Type": "application/json"}
    if signature is not None:
        sent["X-Freshchat-Signature"] = signature or sign(content)
    sent.update(headers)
    return client.post(path, content=content, headers=sent)


def create_integration(client: TestClient, name: str = "Acme", **extra: Any) -> tuple[str, str]:
    """Create an integration (no Freshchat check) and a key; returns (id, api key)."""
    body = {
        "name": name,
        "freshchat_domain": "acme.freshchat.com",
        "freshchat_api_key": "fc-secret-KEY-123",
        "verify": False,
        **extra,
    }
    response = client.post("/v1/integrations", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    iid = response.json()["id"]
    key = client.post(f"/v1/integrations/{iid}/api-keys", headers=ADMIN)
    assert key.status_code == 201, key.text
    return iid, key.json()["api_key"]


def read_counts(url: str, iid: str, day: datetime | None = None) -> dict[tuple[str, str], int]:
    """All counts of one day (default `base_day()`, 15-minute rows) through the read API,
    keyed as the oracles key them."""
    day = day or base_day()
    params = {
        "from": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "to": (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "interval": "15",
    }
    response = httpx.get(
        f"{url}/v1/integrations/{iid}/contacts", params=params, headers=READER, timeout=30
    )
    assert response.status_code == 200, response.text
    out: dict[tuple[str, str], int] = {}
    for row in response.json()["rows"]:
        out[(row["interval_start"][:16] + "Z", row["queue"])] = row["contacts"]
    return out


# --- the storage path without HTTP ---------------------------------------------------------

FAR_FUTURE_MS = 2**42


def shard_of(r: redis.Redis, settings: Settings, iid: str) -> int:
    """The shard an integration lives on."""
    record = r.hget(RedisKeys(settings.key_prefix).integrations(), iid) or b"{}"
    return int(orjson.loads(record)["shard"])


def pending(r: redis.Redis, settings: Settings) -> int:
    """Entries waiting in the shard streams, and parked ones waiting for a group name."""
    keys = RedisKeys(settings.key_prefix)
    return sum(waiting(r, keys, shard) for shard in range(settings.shards))


def waiting(r: redis.Redis, keys: RedisKeys, shard: int) -> int:
    """One shard's entries not counted yet: in its stream and in its parking streams."""
    parked = [text(i) for i in r.smembers(keys.parked_integrations(shard))]
    with r.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.stream(shard))
        for iid in parked:
            pipe.xlen(keys.parked(shard, iid))
        return sum(int(n) for n in pipe.execute())


def store(r: redis.Redis, settings: Settings, iid: str, shard: int, payloads: list[Any]) -> int:
    """Validate, compact and append payloads to the shard stream, as the endpoint does."""
    if not payloads:
        return 0
    events = parse_body(orjson.dumps(payloads), 10**6)
    compacts, _ = to_compacts(events, FAR_FUTURE_MS, 0)
    stream = RedisKeys(settings.key_prefix).stream(shard)
    with r.pipeline(transaction=False) as pipe:
        for c in compacts:
            pipe.xadd(stream, {"e": c.encode(iid)})
        pipe.execute()
    return len(compacts)


def apply_all(r: redis.Redis, settings: Settings, shard: int, batch: int = 500) -> int:
    """Apply every pending entry of a shard with the real script; returns how many applied."""
    applier = Applier(r, settings)
    keys = RedisKeys(settings.key_prefix)
    total = 0
    sources = ["", *(text(i) for i in r.smembers(keys.parked_integrations(shard)))]
    for parked in sources:  # the stream, then what waited for a group name (maybe known now)
        start = "-"
        while True:
            result = applier.apply(shard, start, count=batch, parked=parked)
            total += result.applied
            assert not result.dead_ids, "unexpected dead-lettered events"
            if not result.last_id:
                break
            start = "(" + result.last_id
    return total


def counts(r: redis.Redis, settings: Settings, iid: str, shard: int) -> dict[tuple[str, str], int]:
    """All counts of one integration as {(interval start, queue): contacts}."""
    keys = RedisKeys(settings.key_prefix)
    out: dict[tuple[str, str], int] = defaultdict(int)
    names = {0: "Undefined_Queue"}
    for field, value in r.hgetall(keys.queue_names(shard, iid)).items():
        if text(field).startswith("#") and len(field) > 1:
            names[int(text(field)[1:])] = text(value)
    for key in r.scan_iter(match=keys.counts(shard, iid, 0)[:-1] + "*"):
        day = int(text(key).rsplit(":", 1)[1])
        for field, value in r.hgetall(key).items():
            sod, _, qid = text(field).partition(":")
            start = datetime.fromtimestamp((day * 96 + int(sod)) * SLOT_MS / 1000, UTC)
            out[(start.strftime("%Y-%m-%dT%H:%MZ"), names[int(qid)])] += int(value)
    return {k: v for k, v in out.items() if v}


def all_stored_bytes(r: redis.Redis) -> bytes:
    """Every key and value in the database, readably (no compression), for secret scans."""
    parts: list[Any] = []
    for key in r.scan_iter(count=1000):
        parts.append(key)
        kind = r.type(key)
        if kind == b"string":
            parts.append(r.get(key) or b"")
        elif kind == b"hash":
            for f, v in r.hgetall(key).items():
                parts += [f, v]
        elif kind == b"list":
            parts += r.lrange(key, 0, -1)
        elif kind == b"set":
            parts += list(r.smembers(key))
        elif kind == b"zset":
            parts += list(r.zrange(key, 0, -1))
        elif kind == b"stream":
            entries: Any = r.xrange(key)
            for _, fields in entries:
                for f, v in fields.items():
                    parts += [f, v]
    return b"\n".join(parts)
