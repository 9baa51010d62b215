"""Resolve group ids the events did not name, via Freshchat, into the integration's map (§5).

The group map (`RedisKeys.groups`) is the cache, shared by every worker process:
- positive: `"\\1<expiry>\\1<name>"` from Freshchat, used as is and refreshed after a day
  (the stale name keeps counting while Freshchat is down); a name that events carry is
  written plainly and kept;
- negative: `"\\0<expiry unix s>"` after a 404 (or for a deleted/unknown integration); the
  apply script counts the chat in Undefined_Queue until the expiry, then asks again.

Calls are bounded: one call per unknown (integration, group id), however many events,
batches or worker processes need it (a short Redis lock per pair, and the map is checked
again under the lock); at most MAX_CALLS_PER_MINUTE per integration; and while Freshchat
fails for an integration (429, 5xx, network, 401/403) no call is made for it until the
retry time kept in Redis (`Retry-After` when given, else exponential backoff up to 5 min).
Events that wait for a name are parked per integration (`workers.drain`), so nothing is
lost or guessed meanwhile and the shard's other integrations do not wait behind them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import httpx
from redis import Redis

from app.errors import AppError
from app.freshchat import GROUP_TIMEOUT, GroupAnswer, fetch_group
from app.integration import Integration
from app.integrations import decrypt_secret
from app.lua import NEGATIVE_MARK, POSITIVE_MARK, Lua, bind
from app.redis_keys import RedisKeys, text
from app.settings import Settings

log = logging.getLogger("injixo.groups")

NEGATIVE_TTL_S = 3600  # a 404 sends the group's chats to Undefined_Queue for an hour
POSITIVE_TTL_S = 24 * 3600  # a name from Freshchat is asked again (renames) after a day
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 300.0
RETRY_AFTER_MAX_S = 3600.0  # a larger Retry-After is taken as an hour
LOCK_TTL_MS = 30_000  # longer than one lookup can take with GROUP_TIMEOUT
MAX_CALLS_PER_MINUTE = 120  # per integration, across all workers
RESOLVE_BUDGET_S = 5.0  # start no new lookup after this long in one resolve() call


class _Step(Enum):
    LEARNT = "learnt"  # the map now answers for this group id
    BLOCKED = "blocked"  # no more calls for this integration in this resolve()
    SKIPPED = "skipped"  # another worker is asking Freshchat for this id right now


def _client() -> httpx.Client:
    return httpx.Client(timeout=GROUP_TIMEOUT, follow_redirects=False)


def negative_marker(now: float) -> str:
    """Map value for "Freshchat has no such group": Undefined_Queue until the expiry."""
    return NEGATIVE_MARK + str(int(now) + NEGATIVE_TTL_S)


def positive_entry(name: str, now: float) -> str:
    """Map value for a name learnt from Freshchat: used as is, refreshed after the expiry."""
    return f"{POSITIVE_MARK}{int(now) + POSITIVE_TTL_S}{POSITIVE_MARK}{name}"


def usable(value: bytes | str | None, now: float) -> bool:
    """Whether the map value needs no lookup (an event's name, or an unexpired entry)."""
    if value is None:
        return False
    raw = value.encode() if isinstance(value, str) else value
    if not raw.startswith((NEGATIVE_MARK.encode(), POSITIVE_MARK.encode())):
        return True
    try:
        return int(raw[1:].split(POSITIVE_MARK.encode(), 1)[0]) > int(now)
    except ValueError:
        return False


@dataclass
class GroupResolver:
    """One Freshchat call per unknown group id; per-integration backoff while Freshchat fails."""

    redis: Redis
    settings: Settings
    client: httpx.Client = field(default_factory=_client)
    clock: Callable[[], float] = time.time
    budget_s: float = RESOLVE_BUDGET_S

    def __post_init__(self) -> None:
        self.redis_keys = RedisKeys(self.settings.key_prefix)
        self._unlock = bind(self.redis, Lua.UNLOCK)

    def resolve(self, shard: int, needs: list[tuple[str, str]]) -> bool:
        """Look up each (integration, group id); True if any name or 404 was learnt."""
        began = time.monotonic()
        learnt = False
        blocked: set[str] = set()
        integrations: dict[str, Integration | None] = {}
        for n, (iid, gid) in enumerate(dict.fromkeys(needs)):
            if iid in blocked:
                continue
            if n and time.monotonic() - began > self.budget_s:
                log.info("shard %s: group lookups left for the next drain (time budget)", shard)
                break
            if iid not in integrations:
                integrations[iid] = self._integration(iid)
            step = self._resolve_one(shard, iid, gid, integrations[iid])
            if step is _Step.LEARNT:
                learnt = True
            elif step is _Step.BLOCKED:
                blocked.add(iid)
        return learnt

    def _integration(self, iid: str) -> Integration | None:
        raw = self.redis.hget(self.redis_keys.integrations(), iid)
        return None if raw is None else Integration.load(raw)

    def _resolve_one(
        self, shard: int, iid: str, gid: str, integration: Integration | None
    ) -> _Step:
        groups = self.redis_keys.groups(shard, iid)
        if usable(self.redis.hget(groups, gid), self.clock()):
            return _Step.LEARNT  # another worker (or an event) named it meanwhile
        if integration is None or not integration.active:
            self.redis.hset(groups, gid, negative_marker(self.clock()))
            return _Step.LEARNT
        fingerprint = _fingerprint(integration)
        if self._backing_off(shard, iid, fingerprint):
            return _Step.BLOCKED
        token = secrets.token_hex(8)
        lock = self.redis_keys.group_lock(shard, iid, gid)
        if not self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
            return _Step.SKIPPED
        try:
            if usable(self.redis.hget(groups, gid), self.clock()):
                return _Step.LEARNT
            if not self._within_rate(shard, iid):
                log.warning("integration %s: group lookups over %s/min", iid, MAX_CALLS_PER_MINUTE)
                return _Step.BLOCKED
            try:
                api_key = decrypt_secret(self.settings, integration.freshchat_api_key_enc)
            except AppError:
                log.error("integration %s: Freshchat API key cannot be decrypted", iid)
                self._back_off(shard, iid, fingerprint, None, "undecryptable key")
                return _Step.BLOCKED
            answer = fetch_group(self.client, integration.freshchat_domain, api_key, gid)
            # Workers are separate processes: the count lives in Redis, /metrics reads it.
            self.redis.hincrby(self.redis_keys.freshchat_calls(), answer.outcome, 1)
            return self._store(shard, iid, gid, fingerprint, answer)
        finally:
            self._unlock(keys=[lock], args=[token])

    def _store(
        self, shard: int, iid: str, gid: str, fingerprint: str, answer: GroupAnswer
    ) -> _Step:
        groups = self.redis_keys.groups(shard, iid)
        if answer.name is not None:
            log.info("integration %s: group %s named by Freshchat", iid, gid)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(groups, gid, positive_entry(answer.name, self.clock()))
                pipe.delete(self.redis_keys.group_backoff(shard, iid))
                pipe.execute()
            return _Step.LEARNT
        if answer.missing:
            log.info("integration %s: group %s unknown to Freshchat (Undefined_Queue)", iid, gid)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(groups, gid, negative_marker(self.clock()))
                pipe.delete(self.redis_keys.group_backoff(shard, iid))
                pipe.execute()
            return _Step.LEARNT
        self._back_off(shard, iid, fingerprint, answer.retry_after, answer.outcome)
        return _Step.BLOCKED

    def _backing_off(self, shard: int, iid: str, fingerprint: str) -> bool:
        at, fp = self.redis.hmget(self.redis_keys.group_backoff(shard, iid), ["at", "fp"])
        if at is None or (fp is not None and text(fp) != fingerprint):
            return False  # no failure, or the admin changed the key/domain since
        return float(at) > self.clock()

    def _back_off(
        self, shard: int, iid: str, fingerprint: str, retry_after: float | None, why: str
    ) -> None:
        """No calls for this integration until Retry-After, or an exponentially growing delay."""
        key = self.redis_keys.group_backoff(shard, iid)
        last, fp = self.redis.hmget(key, ["d", "fp"])
        delay = BACKOFF_START_S
        if last is not None and fp is not None and text(fp) == fingerprint:
            delay = min(float(last) * 2, BACKOFF_MAX_S)
        # Never earlier than Freshchat asked (nor absurdly late), growing on repeated failures.
        wait = max(min(retry_after or 0.0, RETRY_AFTER_MAX_S), delay)
        now = self.clock()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={"at": repr(now + wait), "d": repr(delay), "fp": fingerprint, "o": why},
            )
            # Kept past the retry time so that repeated failures keep growing the delay.
            pipe.expire(key, int(wait + 2 * BACKOFF_MAX_S) + 1)
            pipe.execute()
        log.warning(
            "integration %s: Freshchat group lookup failed (%s); next try in %.1f s",
            iid,
            why,
            wait,
        )

    def _within_rate(self, shard: int, iid: str) -> bool:
        minute = int(self.clock() // 60)
        key = self.redis_keys.group_calls(shard, iid, minute)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            calls, _ = pipe.execute()
        return int(calls) <= MAX_CALLS_PER_MINUTE


def _fingerprint(integration: Integration) -> str:
    """Changes when the admin changes the Freshchat key or domain (then backoff starts over)."""
    material = f"{integration.freshchat_domain}\n{integration.freshchat_api_key_enc}"
    return hashlib.sha256(material.encode()).hexdigest()[:16]
