"""The scripts folder and the values Python and Lua share (`app.lua`)."""

from __future__ import annotations

import re

import pytest

from app.compact import Kind
from app.explain import WHY, decode_state
from app.lua import (
    CHAT_EPOCH_MS,
    HERE,
    KEY_NOT_ACTIVE,
    NEGATIVE_MARK,
    POSITIVE_MARK,
    QUEUE_BITS,
    RATE_LIMITED_BASE,
    SLOT_MS,
    SLOTS_PER_DAY,
    STORED,
    STORED_OK,
    UNDEFINED_QUEUE,
    Lua,
    Stored,
    StoreOutcome,
    load,
    store_outcome,
)
from app.metrics import WORKER_COUNTERS


def source(script: Lua) -> str:
    return load(script).source


def test_every_script_is_in_the_folder_and_named_once() -> None:
    on_disk = sorted(p.stem for p in HERE.glob("*.lua"))
    assert on_disk == sorted(s.value for s in Lua)


@pytest.mark.parametrize("script", list(Lua))
def test_every_script_declares_itself_as_lua_with_flags(script: Lua) -> None:
    # The shebang makes Redis check flags up front (no writes when out of memory) and, on a
    # cluster, refuse undeclared keys instead of touching them by luck.
    assert source(script).startswith("#!lua")


def test_the_ingest_script_answers_with_the_named_codes() -> None:
    text = source(Lua.INGEST)
    assert f"local code = {STORED}" in text
    assert f"code = {KEY_NOT_ACTIVE}\n" in text
    assert f"code = -({RATE_LIMITED_BASE} + math.ceil" in text


def test_ingest_codes_decode_to_outcomes() -> None:
    assert store_outcome(STORED) is STORED_OK
    assert store_outcome(KEY_NOT_ACTIVE) == StoreOutcome(Stored.KEY_NOT_ACTIVE)
    assert store_outcome(-(RATE_LIMITED_BASE + 7)) == StoreOutcome(Stored.RATE_LIMITED, 7)
    assert store_outcome(-RATE_LIMITED_BASE) == StoreOutcome(Stored.RATE_LIMITED, 0)
    with pytest.raises(ValueError, match="unknown ingest script code -2"):
        store_outcome(-2)


def test_the_apply_script_uses_the_shared_values() -> None:
    text = source(Lua.APPLY)
    assert f"local UNDEF = '{UNDEFINED_QUEUE}'" in text
    assert re.search(rf"local SLOT = {SLOT_MS}\b", text)
    assert f"floor(slot / {SLOTS_PER_DAY})" in text
    assert f"mark == {ord(NEGATIVE_MARK)} then -- negative" in text
    assert f"mark == {ord(POSITIVE_MARK)} then -- from Freshchat" in text
    assert re.search(rf"local EPOCH = {CHAT_EPOCH_MS}\b", text)
    assert re.search(rf"local QBITS = {QUEUE_BITS}\b", text)


def test_every_why_digit_the_apply_script_writes_is_explained() -> None:
    written = set(re.findall(r"why = [^\n]*'(\d)'", source(Lua.APPLY)))
    written |= set(re.findall(r"local qname, why = UNDEF, '(\d)'", source(Lua.APPLY)))
    written |= set(re.findall(r"source = '(\d)'", source(Lua.APPLY)))
    assert written == set(WHY)
    t = 1_795_000_000_123
    small = f"{(t - CHAT_EPOCH_MS) * QUEUE_BITS + 7}3"
    assert decode_state(small) == (t, 7, "3")
    assert decode_state(f"{t}:{QUEUE_BITS + 1}6") == (t, QUEUE_BITS + 1, "6")


def test_the_apply_script_knows_every_event_kind() -> None:
    text = source(Lua.APPLY)
    accepted = " and ".join(f"kind ~= {int(k)}" for k in Kind)
    assert f"if {accepted} then return nil, 'bad kind' end" in text
    assert f"if kind == {int(Kind.OTHER)} or kind == {int(Kind.ASSIGNED)} then" in text
    assert f"if kind == {int(Kind.ASSIGNED)} then assign(" in text
    assert f"if kind == {int(Kind.SOLVED_GROUP_UNNAMED)} then" in text
    assert f"if kind == {int(Kind.SOLVED)} then" in text


def test_scripts_are_read_once_per_process() -> None:
    assert load(Lua.APPLY) is load(Lua.APPLY)
    assert len(load(Lua.APPLY).sha) == 40


def test_every_worker_counter_the_scripts_keep_is_exported() -> None:
    counted = set()
    for script in Lua:
        counted |= set(re.findall(r"'HINCRBY', stats, '([a-z_]+)'", source(script)))
    assert counted == {"processed", "dead"}
    assert counted <= set(WORKER_COUNTERS)
