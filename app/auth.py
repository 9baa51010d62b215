"""injixo API keys (generation, hashing) and constant-time token checks."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from app.errors import Unauthorized

KEY_SCHEME = "ijx"
PREFIX_CHARS = 8


@dataclass(frozen=True)
class NewKey:
    """A freshly generated injixo API key; `secret` is shown once and never stored."""

    key_id: str
    prefix: str
    secret: str
    key_hash: str


def hash_key(secret: str) -> str:
    """SHA-256 hex of a key; keys carry 256 random bits, so no slow KDF is needed."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def generate_key() -> NewKey:
    """A key `ijx_<8 visible chars>_<43 chars = 256 random bits>`."""
    visible = secrets.token_hex(PREFIX_CHARS // 2)
    secret = f"{KEY_SCHEME}_{visible}_{secrets.token_urlsafe(32)}"
    return NewKey(
        key_id=secrets.token_hex(6),
        prefix=f"{KEY_SCHEME}_{visible}",
        secret=secret,
        key_hash=hash_key(secret),
    )


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    return bearer_of(request.headers.get("authorization", ""))


def bearer_of(header: str) -> str | None:
    """The token of an `Authorization` header value if its scheme is Bearer, or None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(candidate: str | None, allowed: tuple[str, ...]) -> bool:
    """Constant-time check against every allowed token (no early exit)."""
    if candidate is None:
        return False
    given = candidate.encode("utf-8", "surrogatepass")
    found = False
    for token in allowed:
        found |= hmac.compare_digest(given, token.encode())
    return found


def require_token(request: Request, allowed: tuple[str, ...]) -> None:
    """Raise 401 unless the request carries one of the allowed tokens."""
    if not token_matches(bearer_token(request), allowed):
        raise Unauthorized("missing or invalid token")
