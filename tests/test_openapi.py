"""`/openapi.json` follows the limits in force instead of copies of them."""

from __future__ import annotations

from typing import Any

from app.intervals import INTERVALS
from app.openapi import build


def events_body(document: dict[str, Any]) -> dict[str, Any]:
    post = document["paths"]["/v1/freshchat/events"]["post"]
    schema: dict[str, Any] = post["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_the_batch_limit_is_the_configured_one() -> None:
    for limit in (1, 500, 2000):
        batch = events_body(build(limit))["oneOf"][1]
        assert (batch["minItems"], batch["maxItems"]) == (1, limit)
        summary = build(limit)["paths"]["/v1/freshchat/events"]["post"]["summary"]
        assert summary.endswith(f"an array of up to {limit})")


def test_the_intervals_are_the_ones_the_read_api_takes() -> None:
    params = build(500)["paths"]["/v1/integrations/{iid}/contacts"]["get"]["parameters"]
    [interval] = [p for p in params if p["name"] == "interval"]
    assert interval["schema"]["enum"] == list(INTERVALS) == [15, 30, 60]
