"""The one traffic rule (§8): why an integration is healthy or stale, and which causes are stale."""

from __future__ import annotations

import pytest

from app.activity import AUTH_ONLY_GRACE_S, Activity, Traffic, traffic
from app.integration import Integration, Status
from app.state import WORDS

NOW = 2_000_000_000
DAY = 24 * 3600


def integration(created_ago: int, status: Status = Status.ACTIVE) -> Integration:
    """An integration created `created_ago` seconds before NOW."""
    return Integration(
        id="a",
        name="A",
        freshchat_domain="a.freshchat.com",
        created_at=NOW - created_ago,
        status=status,
        shard=0,
        freshchat_api_key_enc="x",
    )


def seen(last_ago: int | None, failures: int = 0, failed_ago: int | None = None) -> Activity:
    """Activity with its times given as seconds before NOW."""
    return Activity(
        None if last_ago is None else NOW - last_ago,
        failures,
        None if failed_ago is None else NOW - failed_ago,
    )


@pytest.mark.parametrize(
    ("created_ago", "activity", "expected"),
    [
        (60, None, Traffic.WAITING),
        (60, seen(None), Traffic.WAITING),
        (DAY, None, Traffic.WAITING),  # exactly the limit is not more than it
        (DAY + 1, None, Traffic.SILENT_SINCE_SETUP),
        (60, seen(None, failures=1, failed_ago=30), Traffic.ONLY_REJECTED),
        (5 * DAY, seen(None, failures=4), Traffic.ONLY_REJECTED),
        (5 * DAY, seen(30), Traffic.RECEIVING),
        (5 * DAY, seen(30, failures=9, failed_ago=3 * DAY), Traffic.RECEIVING),
        (5 * DAY, seen(DAY + 1), Traffic.SILENT),
        (5 * DAY, seen(2 * DAY, failures=2, failed_ago=3 * DAY), Traffic.SILENT_WITH_REJECTIONS),
        (5 * DAY, seen(2 * DAY, failures=2, failed_ago=60), Traffic.SILENT_WITH_REJECTIONS),
        # Events stopped and only failures came after, past the grace: the key went bad.
        (5 * DAY, seen(AUTH_ONLY_GRACE_S + 1, 3, failed_ago=10), Traffic.REJECTED_LATELY),
        # Within the grace a failure after the last event is not yet a pattern.
        (5 * DAY, seen(AUTH_ONLY_GRACE_S, 3, failed_ago=10), Traffic.RECEIVING),
    ],
)
def test_traffic_names_the_cause(
    created_ago: int, activity: Activity | None, expected: Traffic
) -> None:
    assert traffic(integration(created_ago), activity, NOW, DAY) is expected


def test_a_deleted_integration_is_never_stale() -> None:
    deleted = integration(9 * DAY, Status.DELETED)
    for activity in (None, seen(None, 5), seen(8 * DAY)):
        assert traffic(deleted, activity, NOW, DAY) is Traffic.DELETED
        assert not traffic(deleted, activity, NOW, DAY).stale


def test_the_stale_causes() -> None:
    record = integration(5 * DAY)
    assert {cause for cause in Traffic if cause.stale} == {
        Traffic.ONLY_REJECTED,
        Traffic.SILENT_SINCE_SETUP,
        Traffic.REJECTED_LATELY,
        Traffic.SILENT,
        Traffic.SILENT_WITH_REJECTIONS,
    }
    assert traffic(record, seen(2 * DAY), NOW, DAY).stale
    assert not traffic(record, seen(2 * DAY), NOW, 3 * DAY).stale
    assert not traffic(record, None, NOW, 6 * DAY).stale


def test_every_cause_has_words_and_only_stale_ones_ask_for_a_fix() -> None:
    for cause in Traffic:
        reason, fix = WORDS[cause]
        assert reason
        assert bool(fix) == (cause.stale or cause is Traffic.WAITING)
    assert WORDS[Traffic.SILENT][0].format(hours=6) == "No events for more than 6 h"
    assert WORDS[Traffic.SILENT_SINCE_SETUP][0].format(hours=1) == (
        "No events received in the 1 h since setup"
    )
    assert WORDS[Traffic.SILENT_WITH_REJECTIONS][0].format(hours=24) == (
        "No events for more than 24 h (and rejected requests since)"
    )
