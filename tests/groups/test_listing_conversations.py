"""Conversation lookups (§5, §12): a need `"@<chat key>"` asks Freshchat for the chat's current
group and stores it as the chat's assignment `"0:<group id>"` (NX, with the chat's TTL);
bounded and backed off like the group listing; a parked wait on it is ready once the
assignment exists."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial

import pytest
import redis

from app.compact import chat_key
from app.lua import CONVERSATION_NEED
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.chat_support import assignment as stored_assignment
from tests.chat_support import bucket_key, set_assignment
from tests.freshchat_standin import FreshchatStandIn, running
from tests.group_support import (
    GOOD,
    GROUPS,
    PAGES,
    T0,
    Clock,
    add_integration,
    backoff,
    calls,
    group_map,
    integrations_call,
)
from workers import groups
from workers.applier import Applier
from workers.drain import Drainer
from workers.groups import GroupResolver

CID = "5a1c8b0e-77aa-4c1e-9e0f-0123456789ab"
CHAT = chat_key(CID)


@pytest.fixture
def fc() -> Iterator[FreshchatStandIn]:
    with running() as standin:
        standin.script.valid_keys = {GOOD}
        standin.script.groups = dict(GROUPS)
        standin.script.conversations = {CID: "g1"}
        yield standin


def need(iid: str, chat: str = CHAT) -> tuple[str, str]:
    return iid, CONVERSATION_NEED + chat


def assignment(r: redis.Redis, settings: Settings, shard: int, iid: str, chat: str = CHAT) -> str:
    return stored_assignment(r, settings, shard, iid, chat)


def test_the_chat_s_group_is_stored_as_its_assignment(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [need(iid), need(iid)]) is True
    assert assignment(r, settings, shard, iid) == "0:g1"
    raw = r.hget(bucket_key(r, settings, shard, iid, CHAT), "@" + CHAT)
    assert raw == f"{int(time.time()) // 86400 % 100:02d}0:g1".encode()  # touched today
    [asked] = fc.requests
    assert (asked.path, asked.authorization) == (f"/v2/conversations/{CID}", f"Bearer {GOOD}")
    assert calls(r, settings) == {"ok": 1}
    # Known now: asking again makes no call.
    assert resolver.resolve(shard, [need(iid)]) is True
    assert len(fc.requests) == 1
    assert fc.group_gets() == [] and fc.list_gets() == []


def test_no_group_or_an_unknown_conversation_store_an_empty_group(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    unassigned = str(uuid.uuid4())
    fc.script.conversations[unassigned] = None
    gone = chat_key(str(uuid.uuid4()))
    assert resolver.resolve(shard, [need(iid, chat_key(unassigned)), need(iid, gone)]) is True
    assert assignment(r, settings, shard, iid, chat_key(unassigned)) == "0:"
    assert assignment(r, settings, shard, iid, gone) == "0:"  # 404: no group
    assert calls(r, settings) == {"ok": 1, "not_found": 1}
    assert backoff(r, resolver, shard, iid) == {}


def test_a_raw_conversation_id_is_asked_for_as_it_is(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.script.conversations["conv 42/x"] = 42
    chat = chat_key("conv 42/x")
    assert resolver.resolve(shard, [need(iid, chat)]) is True
    assert assignment(r, settings, shard, iid, chat) == "0:42"
    assert [q.path for q in fc.requests] == ["/v2/conversations/conv%2042%2Fx"]


def test_an_assignment_seen_on_the_webhook_path_wins(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    set_assignment(r, settings, shard, iid, CHAT, "1795000000000:g7")
    assert resolver.resolve(shard, [need(iid)]) is True  # known already: no call
    assert fc.requests == []
    # One arriving while Freshchat answers: NX keeps it.
    r.hdel(bucket_key(r, settings, shard, iid, CHAT), "@" + CHAT)
    fc.slow(0.4)
    later = partial(set_assignment, r, settings, shard, iid, CHAT, "1795000000001:g8")
    threading.Timer(0.1, later).start()
    assert resolver.resolve(shard, [need(iid)]) is True
    assert len(fc.requests) == 1
    assert assignment(r, settings, shard, iid) == "1795000000001:g8"


def test_a_failure_backs_off_and_stores_nothing(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    clock: Clock,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    other = str(uuid.uuid4())
    fc.script.conversations[other] = "g2"
    needs = [need(iid), need(iid, chat_key(other))]
    fc.fail_next(503, retry_after="30")
    assert resolver.resolve(shard, needs) is False
    assert len(fc.requests) == 1  # the integration backs off: the other chat waits too
    assert assignment(r, settings, shard, iid) == ""
    state = backoff(r, resolver, shard, iid)
    assert (float(state["at"]), state["o"]) == (T0 + 30, "server_error")
    clock.now += 29
    assert resolver.resolve(shard, needs) is False
    assert len(fc.requests) == 1
    clock.now += 2
    assert resolver.resolve(shard, needs) is True
    assert assignment(r, settings, shard, iid) == "0:g1"
    assert assignment(r, settings, shard, iid, chat_key(other)) == "0:g2"
    assert backoff(r, resolver, shard, iid) == {}


def test_a_rejected_key_is_recorded_for_the_integration_state(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain, key="fc-revoked")
    assert resolver.resolve(shard, [need(iid)]) is False
    assert backoff(r, resolver, shard, iid)["o"] == "unauthorized"
    assert assignment(r, settings, shard, iid) == ""


def test_one_lookup_per_chat_at_a_time(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    lock = resolver.redis_keys.conversation_lock(shard, iid, CHAT)
    r.set(lock, "other-worker", px=5000)
    assert resolver.resolve(shard, [need(iid)]) is False
    assert fc.requests == []
    assert r.get(lock) == b"other-worker"


def test_lookups_count_toward_the_per_minute_cap(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(groups, "MAX_CALLS_PER_MINUTE", 5)
    iid, shard = add_integration(settings, fc.domain)
    chats = [chat_key(str(uuid.uuid4())) for _ in range(6)]
    # A listing of three pages, then lookups: two fit in the minute.
    assert resolver.resolve(shard, [(iid, "g1"), *(need(iid, c) for c in chats)]) is True
    assert fc.listed_pages() == PAGES
    assert len(fc.conversation_gets()) == 2
    assert sum(assignment(r, settings, shard, iid, c) == "0:" for c in chats) == 2


def test_groups_and_chats_of_one_integration_in_one_call(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    assert resolver.resolve(shard, [(iid, "g2"), need(iid), (iid, "gone")]) is True
    assert fc.listed_pages() == PAGES and len(fc.conversation_gets()) == 1
    assert group_map(r, settings, shard, iid)["g2"] == b"Billing | EU"
    assert group_map(r, settings, shard, iid)["gone"].startswith(b"\0")
    assert assignment(r, settings, shard, iid) == "0:g1"


def test_a_deleted_integration_s_chats_get_no_group(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    integrations_call(settings, "delete", iid)
    assert resolver.resolve(shard, [need(iid)]) is True
    assert assignment(r, settings, shard, iid) == "0:"
    assert fc.requests == []


def test_time_budget_leaves_lookups_for_the_next_drain(
    settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    fc.slow(0.15)
    resolver.budget_s = 0.1
    chats = [chat_key(str(uuid.uuid4())) for _ in range(3)]
    began = time.monotonic()
    assert resolver.resolve(shard, [need(iid, c) for c in chats]) is True
    assert len(fc.requests) == 1 and time.monotonic() - began < 1.0


# The drain's check of parked integrations (workers.drain.Drainer._parked_ready).


def park(r: redis.Redis, settings: Settings, shard: int, iid: str, *waits: str) -> None:
    """Mark the integration as parked, waiting for these group ids or "@<chat>" entries."""
    keys = RedisKeys(settings.key_prefix)
    r.sadd(keys.parked_integrations(shard), iid)
    r.sadd(keys.parked_groups(shard, iid), *waits)


def test_a_parked_chat_is_ready_once_its_assignment_exists(
    r: redis.Redis,
    settings: Settings,
    fc: FreshchatStandIn,
    resolver: GroupResolver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    drainer = Drainer(settings, r, Applier(r, settings), resolver, r)
    park(r, settings, shard, iid, CONVERSATION_NEED + CHAT, "gnever")
    fc.fail_always(503)
    assert drainer._parked_ready(shard) == []  # nothing known, Freshchat fails
    set_assignment(r, settings, shard, iid, CHAT, "1795000000000:g1")  # a webhook
    asked: list[object] = []

    def spy(shard: int, needs: list[tuple[str, str]]) -> bool:
        asked.append(needs)
        return False

    monkeypatch.setattr(resolver, "resolve", spy)
    assert drainer._parked_ready(shard) == [iid]
    assert asked == []  # ready from the assignment alone: the resolver was not needed


def test_a_parked_chat_is_looked_up_by_the_drain(
    r: redis.Redis, settings: Settings, fc: FreshchatStandIn, resolver: GroupResolver
) -> None:
    iid, shard = add_integration(settings, fc.domain)
    drainer = Drainer(settings, r, Applier(r, settings), resolver, r)
    park(r, settings, shard, iid, CONVERSATION_NEED + CHAT)
    assert drainer._parked_ready(shard) == [iid]
    assert assignment(r, settings, shard, iid) == "0:g1"
    assert [q.path for q in fc.requests] == [f"/v2/conversations/{CID}"]
