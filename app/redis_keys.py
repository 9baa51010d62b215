"""Every Redis key name the product uses, in one place (API keys are `app.auth`'s).

Per-shard data carries the hash tag `{N}` (N = the integration's shard), so one Lua call
only ever touches keys of one slot and the data side could move to Redis Cluster.
Scripts never build a name: every key they touch is passed in KEYS (the apply script asks
for keys by tag, `RedisKeys.tagged`), so a script on a Redis Cluster touches only its slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def text(value: Any) -> str:
    """A Redis reply (bytes, or str when decoding is on) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class RedisKeys:
    """Key names under one configurable prefix."""

    prefix: str

    # Global (admin-side) keys.
    def integrations(self) -> str:
        """Hash: integration id -> JSON record."""
        return f"{self.prefix}:integrations"

    def name_index(self) -> str:
        """Hash: folded integration name -> integration id (uniqueness index)."""
        return f"{self.prefix}:names"

    def api_key_owner(self, key_hash: str) -> str:
        """String: SHA-256 of an injixo API key -> `integration_id:key_id`."""
        return f"{self.prefix}:apikey:{key_hash}"

    def api_key_meta(self, integration_id: str) -> str:
        """Hash: key id -> JSON metadata (prefix, created/revoked times, hash)."""
        return f"{self.prefix}:keymeta:{integration_id}"

    def api_key_used(self, integration_id: str) -> str:
        """Hash: key id -> last-used unix time (written at most once a minute per key)."""
        return f"{self.prefix}:keyused:{integration_id}"

    def last_event(self) -> str:
        """Hash: integration id -> unix time an event was last accepted (throttled writes)."""
        return f"{self.prefix}:lastevent"

    def auth_failures(self) -> str:
        """Hash: integration id -> requests refused with one of its (revoked) keys."""
        return f"{self.prefix}:authfail"

    def auth_failure_at(self) -> str:
        """Hash: integration id -> unix time of the last refused request."""
        return f"{self.prefix}:authfailat"

    def app_installed(self) -> str:
        """Hash: integration id -> unix time the injixo app last reported `onAppInstall`."""
        return f"{self.prefix}:appinstalled"

    def app_uninstalled(self) -> str:
        """Hash: integration id -> unix time the injixo app last reported `onAppUninstall`."""
        return f"{self.prefix}:appuninstalled"

    def webhooks(self) -> str:
        """Hash: integration id -> JSON of its Freshchat webhook (id, public key PEM, times)."""
        return f"{self.prefix}:webhooks"

    def webhook_owner(self, webhook_id: str) -> str:
        """String: a webhook id (the last part of its URL) -> integration id."""
        return f"{self.prefix}:webhook:{webhook_id}"

    def freshchat_calls(self) -> str:
        """Hash: outcome -> Freshchat API calls made by the workers."""
        return f"{self.prefix}:freshchatcalls"

    # Per-shard keys (hash-tagged).
    def shard_prefix(self, shard: int) -> str:
        """Common prefix of every key in one shard's slot."""
        return f"{self.prefix}:{{{shard}}}:"

    def stream(self, shard: int) -> str:
        """Stream of pending compact events for one shard."""
        return self.shard_prefix(shard) + "ev"

    def dead(self, shard: int) -> str:
        """Stream of events the batch could not apply (each also an RQ job)."""
        return self.shard_prefix(shard) + "dead"

    def stats(self, shard: int) -> str:
        """Hash: `processed`, `dead` -> events applied / dead-lettered by the workers."""
        return self.shard_prefix(shard) + "stats"

    def drain_flag(self, shard: int) -> str:
        """String with a lease: a drain job for this shard is queued or running."""
        return self.shard_prefix(shard) + "drain"

    def active_api_keys(self, shard: int, integration_id: str) -> str:
        """Hash: key hash -> key id, for the keys that may ingest right now."""
        return f"{self.shard_prefix(shard)}k:{integration_id}"

    def rate_bucket(self, shard: int, integration_id: str) -> str:
        """Hash: token bucket (`tokens`, `at`) of the integration's ingest rate limit."""
        return f"{self.shard_prefix(shard)}rl:{integration_id}"

    def groups(self, shard: int, integration_id: str) -> str:
        """Hash: Freshchat group id -> name (or a negative-cache marker)."""
        return f"{self.shard_prefix(shard)}g:{integration_id}"

    def conversation_lock(self, shard: int, integration_id: str, chat: str) -> str:
        """String with a lease: one worker is asking Freshchat for this chat's group (§12)."""
        return f"{self.shard_prefix(shard)}gl:{integration_id}:@{chat}"

    def group_list_lock(self, shard: int, integration_id: str) -> str:
        """String with a lease: one worker is listing this integration's groups (§5)."""
        return f"{self.shard_prefix(shard)}gll:{integration_id}"

    def group_list_next(self, shard: int, integration_id: str) -> str:
        """String `<earliest next listing, unix s> <fingerprint>`, the interval as its TTL."""
        return f"{self.shard_prefix(shard)}gln:{integration_id}"

    def group_backoff(self, shard: int, integration_id: str) -> str:
        """Hash `at` (retry-at unix s), `d` (last delay s), `fp` (key/domain fingerprint),
        `o` (the failed lookup's outcome, for the integration's state)."""
        return f"{self.shard_prefix(shard)}fb:{integration_id}"

    def group_calls(self, shard: int, integration_id: str, minute: int) -> str:
        """Counter of Freshchat group lookups for one integration in one minute."""
        return f"{self.shard_prefix(shard)}fq:{integration_id}:{minute}"

    def queue_names(self, shard: int, integration_id: str) -> str:
        """Hash: queue id -> queue name (and `#` -> last id handed out)."""
        return f"{self.shard_prefix(shard)}qi:{integration_id}"

    def queue_stats(self, shard: int, integration_id: str) -> str:
        """Hash: `<qid>:n|f|l` -> contacts, first and last seen interval."""
        return f"{self.shard_prefix(shard)}qs:{integration_id}"

    def revisions(self, shard: int) -> str:
        """Hash: `#` -> the shard's counts revision, `/f` -> the changes floor (§6)."""
        return self.shard_prefix(shard) + "rv"

    def changes(self, shard: int) -> str:
        """Sorted set: `<iid>|<slot>:<qid>` scored by the revision that last changed it."""
        return self.shard_prefix(shard) + "ch"

    def change_hours(self, shard: int) -> str:
        """Hash: unix hour -> the shard's first revision in it (to drop expired changes)."""
        return self.shard_prefix(shard) + "ck"

    def counts(self, shard: int, integration_id: str, day: int) -> str:
        """Hash for one UTC day: `<slot-of-day>:<qid>` -> contacts."""
        return f"{self.shard_prefix(shard)}n:{integration_id}:{day}"

    def chat_buckets(self, shard: int) -> str:
        """Hash: `<iid>` -> the integration's number of chat buckets, `<iid>#` -> their entries."""
        return self.shard_prefix(shard) + "sb"

    def chat_bucket(self, shard: int, integration_id: str, bucket: int) -> str:
        """Hash (listpack): chat -> state, `@<chat>` -> latest assignment (`app.chat_state`)."""
        return f"{self.shard_prefix(shard)}s:{integration_id}:{bucket}"

    def sweep_day(self, shard: int) -> str:
        """String: the UTC day (days since 1970) the shard's chat buckets were last swept."""
        return self.shard_prefix(shard) + "sw"

    def legacy_chat(self, shard: int, integration_id: str, chat: str) -> str:
        """String with a TTL: a chat's state as kept before chat buckets (migrated at start)."""
        return f"{self.shard_prefix(shard)}c:{integration_id}:{chat}"

    def legacy_assignment(self, shard: int, integration_id: str, chat: str) -> str:
        """String with a TTL: a chat's assignment as kept before chat buckets."""
        return f"{self.shard_prefix(shard)}a:{integration_id}:{chat}"

    def tagged(self, shard: int, tag: str) -> str:
        """The key the apply script names by `tag` ("<letter>|<iid>[|<number>]")."""
        letter, iid, *number = tag.split("|")
        if letter == "s":
            return self.chat_bucket(shard, iid, int(number[0]))
        if letter == "n":
            return self.counts(shard, iid, int(number[0]))
        if letter == "g":
            return self.groups(shard, iid)
        if letter == "qi":
            return self.queue_names(shard, iid)
        if letter == "qs":
            return self.queue_stats(shard, iid)
        if letter == "pk":
            return self.parked(shard, iid)
        if letter == "pg":
            return self.parked_groups(shard, iid)
        if letter == "pr":
            return self.parked_groups(shard, iid) + ":n"
        if letter == "c":
            return self.legacy_chat(shard, iid, "|".join(number))
        if letter == "a":
            return self.legacy_assignment(shard, iid, "|".join(number))
        raise ValueError(f"unknown key tag {tag!r}")

    def pending(self, shard: int) -> str:
        """Hash: integration id -> its events stored and not yet counted (parked included)."""
        return self.shard_prefix(shard) + "pn"

    def parked(self, shard: int, integration_id: str) -> str:
        """Stream: the integration's events waiting for a group name, out of the shard's way."""
        return f"{self.shard_prefix(shard)}pk:{integration_id}"

    def parked_integrations(self, shard: int) -> str:
        """Set: integrations of the shard with parked events."""
        return self.shard_prefix(shard) + "pw"

    def parked_groups(self, shard: int, integration_id: str) -> str:
        """Set: the group ids the integration's parked events wait for."""
        return f"{self.shard_prefix(shard)}pg:{integration_id}"

    def deliveries(self, shard: int, integration_id: str) -> str:
        """Stream: the integration's recent ingestion requests (§7 deliveries log)."""
        return f"{self.shard_prefix(shard)}dl:{integration_id}"
