"""Resolve group ids the events did not name, via Freshchat, into the integration's map (§5)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import httpx
import orjson
from redis import Redis

from app.errors import AppError
from app.freshchat import TIMEOUT, fetch_group
from app.integrations import decrypt_secret
from app.keys import Keys
from app.settings import Settings

log = logging.getLogger("injixo.groups")
NEGATIVE_TTL_S = 3600
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 300.0


@dataclass
class GroupResolver:
    """One Freshchat call per unknown group id; per-integration backoff while Freshchat fails."""

    redis: Redis
    settings: Settings
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=TIMEOUT))
    retry_at: dict[str, float] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)

    def resolve(self, shard: int, needs: list[tuple[str, str]]) -> bool:
        """Look up each (integration, group id); True if any name or 404 was learnt."""
        keys = Keys(self.settings.key_prefix)
        learnt = False
        for iid, gid in needs:
            now = time.monotonic()
            if self.retry_at.get(iid, 0.0) > now:
                continue
            value = self._lookup(keys, iid, gid)
            if value is None:
                wait = min(self.delay.get(iid, BACKOFF_START_S / 2) * 2, BACKOFF_MAX_S)
                self.delay[iid] = wait
                self.retry_at[iid] = now + wait
                continue
            self.delay.pop(iid, None)
            self.redis.hset(keys.groups(shard, iid), gid, value)
            learnt = True
        return learnt

    def _lookup(self, keys: Keys, iid: str, gid: str) -> str | None:
        """The map value to store (name, or negative marker), or None to retry later."""
        raw = self.redis.hget(keys.integrations(), iid)
        negative = "\0" + str(int(time.time()) + NEGATIVE_TTL_S)
        if raw is None:
            return negative
        record = orjson.loads(raw)
        try:
            api_key = decrypt_secret(self.settings, record["freshchat_api_key_enc"])
        except AppError:
            log.error("integration %s: Freshchat key cannot be decrypted", iid)
            return None
        answer = fetch_group(self.client, record["freshchat_domain"], api_key, gid)
        log.info("integration %s: group lookup %s", iid, answer.outcome)
        if answer.name is not None:
            return answer.name
        if answer.missing:
            return negative
        if answer.retry_after:
            self.retry_at[iid] = time.monotonic() + answer.retry_after
        return None
