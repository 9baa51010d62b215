"""Name the group ids events did not name, from Freshchat's group list, and find a chat's
current group with a conversation lookup (§5, §12); the answers go to Redis, shared by
every worker process.

The group map (`RedisKeys.groups`) is the cache:
- positive: `"\\1<expiry>\\1<name>"` for every group of a complete listing, used as is and
  refreshed after a day (the stale name keeps counting while Freshchat is down); a name
  that events carry is written plainly, until a listing writes Freshchat's entry over it;
- negative: `"\\0<expiry unix s>"` for a needed id that a complete listing, made after the
  id was needed, does not contain (or for a deleted/unknown integration); the apply script
  counts the chat in Undefined_Queue until the expiry, then asks again.

Listings are bounded per integration however many events, batches or worker processes
wait for names: one at a time (a Redis lock; the map is checked again under it), and at
most one per `group_list_every_seconds` (a Redis key with that TTL, started over when the
admin changes the key or domain). A need `"@<chat key>"` is a conversation lookup; its
answer is stored as the chat's assignment at time 0 (`ChatBuckets.remember_lookup`; an
assignment seen on the webhook path wins), one lookup per chat at a time. Every Freshchat request
counts toward MAX_CALLS_PER_MINUTE per integration, and while Freshchat fails for an
integration (429, 5xx, network, 401/403, malformed answers) no call is made for it until
the retry time kept in Redis (`Retry-After` when given, else exponential backoff up to
5 min), whose outcome `app.state` shows. Events that wait are parked per integration
(`workers.drain`), so nothing is lost or guessed meanwhile and the shard's other
integrations do not wait behind them.
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
from redis.typing import EncodableT, FieldT

from app.compact import conversation_id_of
from app.errors import AppError
from app.freshchat import GROUP_TIMEOUT, GroupListing, fetch_conversation, list_groups
from app.integration import Integration
from app.integrations import decrypt_secret
from app.lua import CONVERSATION_NEED, NEGATIVE_MARK, POSITIVE_MARK, Lua, bind
from app.redis_keys import RedisKeys, text
from app.settings import Settings
from workers.applier import Applier
from workers.chat_buckets import ChatBuckets

log = logging.getLogger("injixo.groups")

NEGATIVE_TTL_S = 3600  # an id absent from a listing goes to Undefined_Queue for an hour
POSITIVE_TTL_S = 24 * 3600  # a name from Freshchat is asked again (renames) after a day
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 300.0
RETRY_AFTER_MAX_S = 3600.0  # a larger Retry-After is taken as an hour
LOCK_TTL_MS = 30_000  # longer than one request can take with GROUP_TIMEOUT; renewed per page
MAX_CALLS_PER_MINUTE = 120  # Freshchat requests per integration, across all workers
RESOLVE_BUDGET_S = 5.0  # start no new lookup after this long in one resolve() call


class _Step(Enum):
    LEARNT = "learnt"  # the map (or the chat's assignment) now answers for a need
    BLOCKED = "blocked"  # no more calls for this integration in this resolve()
    SKIPPED = "skipped"  # not now: another worker is asking, or the listing interval runs


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
    """One listing per integration at a time and per interval; per-integration backoff."""

    redis: Redis
    settings: Settings
    client: httpx.Client = field(default_factory=_client)
    clock: Callable[[], float] = time.time
    budget_s: float = RESOLVE_BUDGET_S

    def __post_init__(self) -> None:
        self.redis_keys = RedisKeys(self.settings.key_prefix)
        self._unlock = bind(self.redis, Lua.UNLOCK)
        self.chats = ChatBuckets(Applier(self.redis, self.settings))  # where answers are kept

    def resolve(self, shard: int, needs: list[tuple[str, str]]) -> bool:
        """Answer each (integration, group id or "@chat"); True if anything was learnt."""
        began = time.monotonic()
        by_integration: dict[str, list[str]] = {}
        for iid, gid in dict.fromkeys(needs):
            by_integration.setdefault(iid, []).append(gid)
        learnt = False
        for n, (iid, gids) in enumerate(by_integration.items()):
            if n and self._over_budget(began):
                log.info("shard %s: group lookups left for the next drain (time budget)", shard)
                break
            learnt |= self._resolve_integration(shard, iid, gids, began)
        return learnt

    def _over_budget(self, began: float) -> bool:
        return time.monotonic() - began > self.budget_s

    def _integration(self, iid: str) -> Integration | None:
        raw = self.redis.hget(self.redis_keys.integrations(), iid)
        return None if raw is None else Integration.load(raw)

    def _resolve_integration(self, shard: int, iid: str, gids: list[str], began: float) -> bool:
        need = CONVERSATION_NEED
        unknown = self._unknown(shard, iid, [g for g in gids if not g.startswith(need)])
        chats = self._unassigned(shard, iid, [g[len(need) :] for g in gids if g.startswith(need)])
        # Named meanwhile (by an event, or by another worker): that is progress too.
        learnt = len(unknown) + len(chats) < len(gids)
        if not unknown and not chats:
            return learnt
        integration = self._integration(iid)
        if integration is None or not integration.active:
            self._nothing_to_ask(shard, iid, unknown, chats)
            return True
        fingerprint = _fingerprint(integration)
        if self._backing_off(shard, iid, fingerprint):
            return learnt
        if unknown:
            step = self._list(shard, iid, unknown, integration, fingerprint)
            if step is _Step.BLOCKED:
                return learnt
            learnt |= step is _Step.LEARNT
        for n, chat in enumerate(chats):
            if (n or unknown) and self._over_budget(began):
                break
            step = self._lookup(shard, iid, chat, integration, fingerprint)
            if step is _Step.BLOCKED:
                break
            learnt |= step is _Step.LEARNT
        return learnt

    def _unknown(self, shard: int, iid: str, gids: list[str]) -> list[str]:
        """The group ids the map has no usable value for."""
        if not gids:
            return []
        values = self.redis.hmget(self.redis_keys.groups(shard, iid), gids)
        now = self.clock()
        return [gid for gid, value in zip(gids, values, strict=True) if not usable(value, now)]

    def _unassigned(self, shard: int, iid: str, chats: list[str]) -> list[str]:
        """The chats with no assignment yet (from the webhook path or an earlier lookup)."""
        found = self.chats.assigned(shard, iid, chats)
        return [chat for chat, exists in zip(chats, found, strict=True) if not exists]

    def _nothing_to_ask(self, shard: int, iid: str, gids: list[str], chats: list[str]) -> None:
        """Nobody to ask (a deleted or unknown integration): the chats go to Undefined_Queue."""
        if gids:
            marker = negative_marker(self.clock())
            self.redis.hset(self.redis_keys.groups(shard, iid), mapping=dict.fromkeys(gids, marker))
        for chat in chats:
            self.chats.remember_lookup(shard, iid, chat, "")

    # The listing.

    def _list(
        self, shard: int, iid: str, unknown: list[str], integration: Integration, fp: str
    ) -> _Step:
        due = self.redis_keys.group_list_next(shard, iid)
        if not self._listing_due(due, fp):
            return _Step.SKIPPED  # the ids wait for the next listing
        token = secrets.token_hex(8)
        lock = self.redis_keys.group_list_lock(shard, iid)
        if not self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
            return _Step.SKIPPED  # another worker is listing: its names serve these events
        try:
            unknown = self._unknown(shard, iid, unknown)
            if not unknown:
                return _Step.LEARNT
            if not self._listing_due(due, fp):
                return _Step.SKIPPED
            if not self._within_rate(shard, iid):
                return _Step.BLOCKED
            api_key = self._api_key(shard, iid, integration, fp)
            if api_key is None:
                return _Step.BLOCKED
            every = self.settings.group_list_every_seconds
            if every > 0:  # a failed listing counts too: the interval bounds every attempt
                next_at = f"{self.clock() + every!r} {fp}"
                self.redis.set(due, next_at, px=max(1, int(every * 1000)))

            def on_request(outcome: str) -> None:
                self._count_call(outcome)
                self._renew(lock, token)  # a long listing keeps the lock it began with

            listing = list_groups(
                self.client, integration.freshchat_domain, api_key, on_request=on_request
            )
            if listing.requests > 1:  # the first request was counted by _within_rate
                self._add_calls(shard, iid, listing.requests - 1)
            return self._store_listing(shard, iid, unknown, fp, listing)
        finally:
            self._unlock(keys=[lock], args=[token])

    def _listing_due(self, key: str, fingerprint: str) -> bool:
        raw = self.redis.get(key)
        if raw is None:
            return True
        at, _, fp = text(raw).partition(" ")
        if fp != fingerprint:
            return True  # the admin changed the key or domain: list with it at once
        try:
            return float(at) <= self.clock()
        except ValueError:
            return True

    def _store_listing(
        self, shard: int, iid: str, unknown: list[str], fp: str, listing: GroupListing
    ) -> _Step:
        if listing.names is None:
            self._back_off(shard, iid, fp, listing.retry_after, listing.outcome)
            return _Step.BLOCKED
        now = self.clock()
        entries: dict[FieldT, EncodableT] = {
            gid: positive_entry(name, now) for gid, name in listing.names.items()
        }
        # Only a complete listing that began after these ids were needed says "not found".
        absent = [gid for gid in unknown if gid not in listing.names]
        entries.update(dict.fromkeys(absent, negative_marker(now)))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.redis_keys.groups(shard, iid), mapping=entries)
            pipe.delete(self.redis_keys.group_backoff(shard, iid))
            pipe.execute()
        log.info(
            "integration %s: %s groups listed by Freshchat in %s requests; %s needed ids not "
            "among them (Undefined_Queue)",
            iid,
            len(listing.names),
            listing.requests,
            len(absent),
        )
        return _Step.LEARNT

    # The conversation lookup (§12).

    def _lookup(self, shard: int, iid: str, chat: str, integration: Integration, fp: str) -> _Step:
        token = secrets.token_hex(8)
        lock = self.redis_keys.conversation_lock(shard, iid, chat)
        if not self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
            return _Step.SKIPPED
        try:
            if not self._unassigned(shard, iid, [chat]):
                return _Step.LEARNT
            try:
                conversation_id = conversation_id_of(chat)
            except ValueError:  # not a key the ingest path made: nothing to ask about
                self._nothing_to_ask(shard, iid, [], [chat])
                return _Step.LEARNT
            if not self._within_rate(shard, iid):
                return _Step.BLOCKED
            api_key = self._api_key(shard, iid, integration, fp)
            if api_key is None:
                return _Step.BLOCKED
            answer = fetch_conversation(
                self.client, integration.freshchat_domain, api_key, conversation_id
            )
            self._count_call(answer.outcome)
            if not answer.answered:
                self._back_off(shard, iid, fp, answer.retry_after, answer.outcome)
                return _Step.BLOCKED
            self.chats.remember_lookup(shard, iid, chat, answer.group_id or "")
            self.redis.delete(self.redis_keys.group_backoff(shard, iid))
            return _Step.LEARNT
        finally:
            self._unlock(keys=[lock], args=[token])

    # Shared by both kinds of call.

    def _api_key(self, shard: int, iid: str, integration: Integration, fp: str) -> str | None:
        try:
            return decrypt_secret(self.settings, integration.freshchat_api_key_enc)
        except AppError:
            log.error("integration %s: Freshchat API key cannot be decrypted", iid)
            self._back_off(shard, iid, fp, None, "undecryptable key")
            return None

    def _count_call(self, outcome: str) -> None:
        # Workers are separate processes: the count lives in Redis, /metrics reads it.
        self.redis.hincrby(self.redis_keys.freshchat_calls(), outcome, 1)

    def _renew(self, lock: str, token: str) -> None:
        """Extend the lock's lease if this worker still holds it (never someone else's)."""
        held = self.redis.get(lock)
        if held is not None and text(held) == token:
            # Not atomic, and need not be: should the lease change hands in between, this
            # only lengthens the new holder's lease, which that holder releases itself.
            self.redis.pexpire(lock, LOCK_TTL_MS)

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
        """Count one call in this minute's window; whether it stays within the cap."""
        if self._add_calls(shard, iid, 1) <= MAX_CALLS_PER_MINUTE:
            return True
        log.warning("integration %s: Freshchat calls over %s/min", iid, MAX_CALLS_PER_MINUTE)
        return False

    def _add_calls(self, shard: int, iid: str, calls: int) -> int:
        minute = int(self.clock() // 60)
        key = self.redis_keys.group_calls(shard, iid, minute)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.incrby(key, calls)
            pipe.expire(key, 120)
            total, _ = pipe.execute()
        return int(total)


def _fingerprint(integration: Integration) -> str:
    """Changes when the admin changes the Freshchat key or domain (then backoff starts over)."""
    material = f"{integration.freshchat_domain}\n{integration.freshchat_api_key_enc}"
    return hashlib.sha256(material.encode()).hexdigest()[:16]
