"""The integration as a type: its stored record, its inputs and its public view (§2).

Adding a field: put it on `Integration` (with a default, so records stored before it
still load), on the input models if people set it (the store copies such fields as they
are; only the `CHECKED` ones get its own validation), and on `IntegrationOut` if it is
shown; mypy then points at `public()`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import IntegrationOut


class Status(StrEnum):
    """Lifecycle of an integration."""

    ACTIVE = "active"
    DELETED = "deleted"  # keys revoked, no ingestion; counts stay readable


#: Input fields the store checks and transforms itself (trimmed, normalised, encrypted).
CHECKED = frozenset({"name", "freshchat_domain", "freshchat_api_key"})


class NewIntegration(BaseModel):
    """What creating an integration takes (API body, page form, CLI)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=1000)
    freshchat_domain: str = Field(max_length=1000)
    freshchat_api_key: str = Field(max_length=4096)


class IntegrationChanges(BaseModel):
    """What can be changed; a field left out (or null) stays as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, max_length=1000)
    freshchat_domain: str | None = Field(default=None, max_length=1000)
    freshchat_api_key: str | None = Field(default=None, max_length=4096)

    def empty(self) -> bool:
        """Nothing to change."""
        return all(value is None for value in self.model_dump().values())

    def plain(self) -> dict[str, object]:
        """The given fields the store takes as they are (not `CHECKED`)."""
        return self.model_dump(exclude=set(CHECKED), exclude_none=True)

    @classmethod
    def names(cls) -> str:
        """The fields, for messages: "a, b or c"."""
        fields = list(cls.model_fields)
        return ", ".join(fields[:-1]) + f" or {fields[-1]}"


class Integration(BaseModel):
    """One stored integration (the JSON value in `RedisKeys.integrations`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    name: str
    freshchat_domain: str
    created_at: int
    status: Status = Status.ACTIVE
    shard: int = Field(ge=0)
    freshchat_api_key_enc: str = Field(repr=False)  # Fernet token, never shown

    @classmethod
    def load(cls, raw: bytes | str) -> Integration:
        """The record from its stored JSON."""
        return cls.model_validate_json(raw)

    def dump(self) -> bytes:
        """The stored JSON."""
        return self.model_dump_json().encode()

    @property
    def active(self) -> bool:
        """Ingesting and counted (not deleted)."""
        return self.status is Status.ACTIVE

    def public(self) -> IntegrationOut:
        """The view the API, CLI and page show: no secret, no internals."""
        return IntegrationOut(
            id=self.id,
            name=self.name,
            freshchat_domain=self.freshchat_domain,
            created_at=self.created_at,
            status=self.status.value,
        )
