"""Payload parsing and compaction (pure, no Redis)."""

from __future__ import annotations

import copy
import json
import random
import uuid
from typing import Any

import orjson
import pytest

from app import events as events_module
from app.compact import Kind, chat_key
from app.errors import BadRequest
from app.events import ConversationEvent, compact, parse_body, to_compacts
from tests.support import G1, at, conv_event, fixture

NOW = at("2026-11-23T12:00:00")


def one(payload: dict[str, object]) -> ConversationEvent:
    [event] = parse_body(orjson.dumps(payload), 500)
    assert isinstance(event, ConversationEvent)
    return event


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (1763885313.381, 1763885313381),
        (1763885313, 1763885313000),
        (1763885313123, 1763885313123),
        ("2026-11-23T08:08:33Z", at("2026-11-23T08:08:33")),
        ("2026-11-23T09:08:33+01:00", at("2026-11-23T08:08:33")),
        ("2026-11-23T08:08:33", at("2026-11-23T08:08:33")),
        ("1971-01-01T00:00:00Z", 365 * 86_400_000),
        ("1763885313.5", 1763885313500),
    ],
)
def test_timestamp_units(stamp: object, expected: int) -> None:
    payload = fixture("conversation_create")
    payload["timestamp"] = stamp
    assert one(payload).timestamp == expected


@pytest.mark.parametrize(
    "stamp",
    [
        "yesterday",
        True,
        None,
        -5,
        float("1e300"),
        [],
        {},
        "0001-01-01T00:00:00+14:00",
        "1969-12-31T00:00:00Z",
    ],
)
def test_bad_timestamp_names_the_field(stamp: object) -> None:
    payload = fixture("conversation_create")
    payload["timestamp"] = stamp
    with pytest.raises(BadRequest) as err:
        parse_body(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), 500)
    assert err.value.detail[0]["loc"] == ["body", "timestamp"]


def test_fixture_kinds() -> None:
    assert compact(one(fixture("conversation_create"))).kind is Kind.OTHER
    resolved = compact(one(fixture("conversation_update_resolved")))
    assert resolved.kind is Kind.SOLVED
    assert resolved.time_ms == at("2026-11-23T08:07:53.901")  # resolved_time wins
    assert resolved.group_name == "Customer Support"
    assert compact(one(fixture("conversation_update_reopened"))).kind is Kind.OTHER


@pytest.mark.parametrize(
    ("status", "change"),
    [
        ("spam", {}),
        ("Deleted", {}),
        ("assigned", {"is_spam": True}),
        ("resolved", {"deleted": True}),
    ],
)
def test_deleted_or_spam(status: str, change: dict[str, Any]) -> None:
    payload = conv_event("c", status, at("2026-11-23T08:40"), ("g1", "Support"), **change)
    c = compact(one(payload))
    assert c.kind is Kind.DELETED
    assert c.time_ms == at("2026-11-23T08:40")


def test_deleted_flag_in_model_changes_and_delete_event() -> None:
    payload = conv_event("c", "assigned", at("2026-11-23T08:40"))
    payload["data"]["changes"] = {"model_changes": {"is_deleted": [False, True]}}
    assert compact(one(payload)).kind is Kind.DELETED
    deleted = conv_event("c", "assigned", at("2026-11-23T08:40"), event="onConversationDelete")
    assert compact(one(deleted)).kind is Kind.DELETED


def test_resolved_case_insensitive_and_timestamp_fallback() -> None:
    c = compact(one(conv_event("c", "RESOLVED", at("2026-11-23T08:50"))))
    assert (c.kind, c.time_ms, c.group_name, c.group_id) == (
        Kind.SOLVED,
        at("2026-11-23T08:50"),
        "",
        "",
    )


def test_group_id_only() -> None:
    c = compact(one(conv_event("c", "resolved", at("2026-11-23T08:50"), group_id_only="g9")))
    assert (c.group_id, c.group_name) == ("g9", "")


def test_chat_key() -> None:
    assert chat_key("5f2d8e8a-1f4b-4c51-8a3e-6f0f3b1c9d27") == "Xy2Oih9LTFGKPm8POxydJw"
    assert chat_key("5F2D8E8A-1F4B-4C51-8A3E-6F0F3B1C9D27") == "Xy2Oih9LTFGKPm8POxydJw"
    assert chat_key("abc") == "~abc"
    assert chat_key("5f2d8e8a1f4b4c518a3e6f0f3b1c9d27") == "~5f2d8e8a1f4b4c518a3e6f0f3b1c9d27"


def test_batch_error_names_index_and_field() -> None:
    good = conv_event("a", "new", at("2026-11-23T08:00"))
    bad = conv_event("b", "new", at("2026-11-23T08:00"))
    del bad["data"]["conversation"]["conversation_id"]
    with pytest.raises(BadRequest) as err:
        parse_body(orjson.dumps([good, good, bad]), 500)
    assert err.value.detail[0]["loc"] == [2, "data", "conversation", "conversation_id"]


def test_other_events_are_ignored_even_if_odd() -> None:
    events = parse_body(orjson.dumps([fixture("message_create"), {"event": "onWhatever"}]), 500)
    compacts, ignored = to_compacts(events, NOW, 86400)
    assert (compacts, ignored) == ([], 2)


def test_future_limit() -> None:
    ok = conv_event("a", "resolved", NOW + 23 * 3600 * 1000)
    late = conv_event("a", "resolved", NOW + 25 * 3600 * 1000)
    assert len(to_compacts(parse_body(orjson.dumps(ok), 5), NOW, 86400)[0]) == 1
    with pytest.raises(BadRequest) as err:
        to_compacts(parse_body(orjson.dumps([ok, late]), 5), NOW, 86400)
    assert err.value.detail[0]["loc"] == [1, "timestamp"]


def test_compact_drops_iparams_and_payload() -> None:
    c = compact(one(fixture("conversation_update_resolved")))
    encoded = c.encode("acme000000")
    assert b"REDACTED" not in encoded
    assert len(encoded) < 160
    assert orjson.loads(encoded) == [
        "acme000000", "Xy2Oih9LTFGKPm8POxydJw", 1, at("2026-11-23T08:07:53.901"),
        "0b7c1a52-5c3e-4e55-9a0e-2f1d7f4f8a11", "Customer Support",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"nope",
        b"42",
        b'"x"',
        b"[]",
        b"[1]",
        b'{"event": 5}',
        b'{"event": "onConversationCreate"}',
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_body(body, 500)


def test_too_many_events() -> None:
    with pytest.raises(BadRequest, match="at most 3"):
        parse_body(orjson.dumps([{"event": "x"}] * 4), 3)


# --- the body validated straight from its bytes answers as the slow way does -------------

Outcome = tuple[Any, ...]


def outcome(body: bytes, slow: bool = False) -> Outcome:
    """What a body comes to: its compact events and ignored count, or the 400."""
    try:
        events = events_module._counted(events_module._parse_slowly(body, 5)) if slow else None
        events = events if events is not None else parse_body(body, 5)
        compacts, ignored = to_compacts(events, NOW, 86_400)
    except BadRequest as exc:
        return ("400", exc.message, exc.detail)
    return ("ok", compacts, ignored)


ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 0.5, 2**63, 2**64 - 1, -(2**63), "", " ", "x" * 65,
    "x" * 256, "x" * 257, "\x00", "true", "TRUE", "yes", "1", "0", "resolved", " Resolved ",
    "spam", "deleted", "2026-11-23T08:00:00Z", "2026-11-23", "1763885313", 1763885313,
    1763885313.5, NOW, [], {}, [True], [False, True], ["assigned", "spam"], ["a", 5],
    {"id": "g1", "name": "A"}, {"id": 7}, {"status": ["new", "deleted"]}, {"is_spam": "true"},
    "onConversationCreate", "onConversationDelete", "onMessageCreate",
    "5f2d8e8a-1f4b-4c51-8a3e-6f0f3b1c9d27", "{5f2d8e8a-1f4b-4c51-8a3e-6f0f3b1c9d27}",
]  # fmt: skip
PATHS = [
    ("event",), ("timestamp",), ("data",), ("data", "conversation"),
    ("data", "conversation", "conversation_id"), ("data", "conversation", "status"),
    ("data", "conversation", "assigned_group_id"), ("data", "conversation", "resolved_time"),
    ("data", "conversation", "deleted"), ("data", "conversation", "is_deleted"),
    ("data", "conversation", "spam"), ("data", "conversation", "is_spam"),
    ("data", "associations"), ("data", "associations", "group"),
    ("data", "associations", "group", "id"), ("data", "associations", "group", "name"),
    ("data", "changes"), ("data", "changes", "model_changes"),
    ("data", "changes", "model_changes", "status"), ("data", "changes", "model_changes", "spam"),
    ("data", "changes", "model_changes", "is_deleted"),
    ("data", "actor", "id"),
]  # fmt: skip


def with_value(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """The event with the field at `path` set to `value` (removed if `value` is REMOVE)."""
    event = copy.deepcopy(event)
    node = event
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is REMOVE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = copy.deepcopy(value)
    return event


REMOVE = object()


def test_fast_and_slow_ways_agree_on_every_odd_field() -> None:
    base = conv_event(str(uuid.UUID(int=5)), "resolved", NOW - 3_600_000, G1)
    for path in PATHS:
        for value in [*ODD_VALUES, REMOVE]:
            body = json.dumps(with_value(base, path, value)).encode()
            assert outcome(body) == outcome(body, slow=True), (path, value)


def test_fast_and_slow_ways_agree_on_odd_batches() -> None:
    rng = random.Random(7)
    for _ in range(300):
        events = []
        for _ in range(rng.choice([1, 2, 6])):
            chat = str(uuid.UUID(int=rng.getrandbits(128)))
            event = conv_event(chat, rng.choice(["new", "resolved"]), NOW - 3_600_000, G1)
            for _ in range(rng.randrange(4)):
                value = rng.choice([*ODD_VALUES, REMOVE])
                event = with_value(event, rng.choice(PATHS), value)
            events.append(event)
        body = json.dumps(events, indent=rng.choice([None, 2])).encode()
        assert outcome(body) == outcome(body, slow=True), body[:200]


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "onMessageCreate", "data": {"x": NaN}}',
        b'[{"event": "onAppInstall", "n": -Infinity}]',
        b'{"event": "onConversationCreate", "timestamp": Infinity}',
        b'{"event": "x", "deep": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"event": "x", "n": 1e400}',
        b'{"event": "onConversationCreate", "event": "onMessageCreate"}',
        b'{"event": "onMessageCreate", "event": "onConversationCreate"}',
        b'\n [{"event": "a"}] \r\n',
        b"\xef\xbb\xbf{}",
        b'{"event": "x", "n": ' + b"9" * 400 + b"}",
    ],
)
def test_fast_and_slow_ways_agree_on_json_corners(body: bytes) -> None:
    """NaN/Infinity anywhere, deep nesting, duplicate keys, whitespace: as orjson reads them."""
    if b"1e400" in body or b"9" * 400 in body:
        # The one difference: a number beyond a double in a field the product ignores is
        # ignored now (it is JSON; orjson refuses it, validating from bytes reads it).
        assert outcome(body) == ("ok", [], 1)
        assert outcome(body, slow=True)[:2] == ("400", "body is not valid JSON")
    else:
        assert outcome(body) == outcome(body, slow=True)


@pytest.mark.parametrize("number", [2**64 - 1, 2**64, -(2**63) - 1, 10**30])
def test_integer_ids_as_orjson_reads_them(number: int) -> None:
    """A 64-bit integer id is its digits; a longer one orjson reads as a float: refused."""
    payload = conv_event("c", "new", NOW - 1000)
    payload["data"]["conversation"]["conversation_id"] = number
    result = outcome(json.dumps(payload).encode())
    assert result == outcome(json.dumps(payload).encode(), slow=True)
    assert result[0] == ("ok" if -(2**63) <= number < 2**64 else "400")


def test_the_answer_names_the_field_in_a_batch_of_thousands() -> None:
    good = orjson.dumps(conv_event("a", "new", NOW - 1000))
    body = b"[" + b",".join([good] * 499 + [b'{"event": "onConversationCreate"}']) + b"]"
    with pytest.raises(BadRequest) as err:
        parse_body(body, 500)
    assert [d["loc"] for d in err.value.detail] == [[499, "timestamp"], [499, "data"]]
    assert len(parse_body(b"[" + b",".join([good] * 500) + b"]", 500)) == 500
