"""Domain errors: each carries an HTTP status and a machine-readable reason."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base error; `reason` is stable and also names the metric label."""

    status = 500
    reason = "internal"
    retry_after: int | None = None

    def __init__(self, message: str, detail: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or []

    def body(self) -> dict[str, Any]:
        """JSON body for this error."""
        out: dict[str, Any] = {"error": self.message, "reason": self.reason}
        if self.detail:
            out["detail"] = self.detail
        return out

    def headers(self) -> dict[str, str]:
        """Response headers this error calls for."""
        headers: dict[str, str] = {}
        if isinstance(self, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class ConfigError(AppError):
    """Settings are missing or invalid."""

    reason = "config"


class BadRequest(AppError):
    """Input is malformed."""

    status = 400
    reason = "invalid"


class Unauthorized(AppError):
    """Missing, unknown or revoked credentials."""

    status = 401
    reason = "unauthorized"


class NotFound(AppError):
    """The named thing does not exist."""

    status = 404
    reason = "not_found"


class Conflict(AppError):
    """The request clashes with existing state (e.g. a duplicate name)."""

    status = 409
    reason = "conflict"


class Gone(AppError):
    """What was asked for is no longer kept (e.g. changes older than the retention)."""

    status = 410
    reason = "gone"


class PayloadTooLarge(AppError):
    """The body is over the configured limit."""

    status = 413
    reason = "too_large"


class UnsupportedMediaType(AppError):
    """The body is not JSON."""

    status = 415
    reason = "unsupported_media_type"


class RateLimited(AppError):
    """The integration sends faster than its limit."""

    status = 429
    reason = "rate_limited"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(AppError):
    """A dependency (Redis, Freshchat) cannot serve us right now."""

    status = 503
    reason = "unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def storage_unavailable() -> Unavailable:
    """What any request gets when Redis fails it."""
    return Unavailable("storage is unavailable, retry later", retry_after=2)


class UpstreamError(AppError):
    """Freshchat answered in a way that stops the operation (rejected key, unreachable)."""

    status = 400
    reason = "freshchat"


class FreshchatUnreachable(UpstreamError):
    """Freshchat could not be reached or failed (network error, 5xx)."""

    status = 502
    reason = "freshchat_unreachable"
