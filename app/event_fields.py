"""Field types of incoming payloads: ids, times, statuses and group names, validated fast."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    Strict,
)
from pydantic_core import core_schema

MS_THRESHOLD = 100_000_000_000  # numbers above this are milliseconds (1e11 s is year 5138)


def _id_text(value: Any) -> Any:
    """Accept numeric ids as text; Freshworks uses both."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _int_id(value: int) -> str:
    """A numeric id as text; only a 64-bit one, as orjson reads longer ones as floats."""
    if not -(2**63) <= value < 2**64:
        raise ValueError("id out of range")
    return str(value)


IdText = Annotated[str, BeforeValidator(_id_text), Field(min_length=1, max_length=256)]
OptionalId = Annotated[Annotated[str, Field(max_length=256)] | None, BeforeValidator(_id_text)]
Status = Annotated[str, Field(max_length=64)] | None
GroupName = Annotated[str, Field(max_length=255)] | None
IN_TURN = Field(union_mode="left_to_right")


def _text_or_integer(min_length: int) -> GetPydanticSchema:
    """`_id_text` and the length limits with no Python call for a text id (the hot path)."""

    def schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        integer = core_schema.int_schema(strict=True)
        return core_schema.union_schema(
            [
                core_schema.str_schema(min_length=min_length, max_length=256),
                core_schema.no_info_after_validator_function(_int_id, integer),
            ],
            mode="left_to_right",
        )

    return GetPydanticSchema(schema)


FastIdText = Annotated[str, _text_or_integer(1)]
FastOptionalId = Annotated[str, _text_or_integer(0)] | None


def _timestamp_ms(value: Any) -> int:
    """Seconds (maybe fractional), milliseconds, or ISO 8601 -> epoch milliseconds."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be a number or an ISO 8601 string")
    if isinstance(value, str):
        text = value.strip()
        try:
            number: float | None = float(text)
        except ValueError:
            number = None
        if number is None:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError("timestamp is not a number or an ISO 8601 time") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                return _in_range(parsed.timestamp() * 1000)
            except (OverflowError, ValueError):
                raise ValueError("timestamp is out of range") from None
        value = number
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("timestamp must be finite")
        return _in_range(value if abs(value) >= MS_THRESHOLD else value * 1000)
    raise ValueError("timestamp must be a number or an ISO 8601 string")


def _in_range(ms: float) -> int:
    """Epoch milliseconds after 1970 and below 2^43 (year 2248), rounded."""
    if ms <= 0 or ms >= 2**43:
        raise ValueError("timestamp is out of range")
    return round(ms)


TimestampMs = Annotated[int, BeforeValidator(_timestamp_ms)]
# The same, with no Python call for an integer that is milliseconds already (the usual).
FastTimestampMs = Annotated[
    Annotated[int, Strict(), Field(ge=MS_THRESHOLD, lt=2**43)] | TimestampMs, IN_TURN
]
