"""An integration's state as the page words it: a short label for the badge, the reason
and the fix in full (`app.state` decides, `app.admin.status` gives the row), and what the
*Install the injixo app* section says about the app's installation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.state import IntegrationState, State

#: The badge's words per state: short, for a customer (the reason says the rest).
LABELS = {
    State.RECEIVING: "Receiving events",
    State.WAITING_FOR_FIRST_EVENT: "Waiting for the first event",
    State.STALE: "No recent events",
    State.AUTH_FAILING: "Requests refused",
    State.APP_UNINSTALLED: "App uninstalled",
    State.STUCK: "Stuck: events wait",
    State.DELETED: "Deleted",
}


@dataclass(frozen=True)
class StateView:
    """What the page shows of an integration's state."""

    state: str  # the state's code, for `data-state` (never shown as text)
    label: str
    level: str  # the badge's CSS class: ok | waiting | warning | stuck | deleted
    reason: str
    fix: str
    stuck: bool
    uninstalled: bool
    installed_at: int | None  # when the injixo app was installed, if it told us
    uninstalled_at: int | None


def state_view(row: dict[str, Any]) -> StateView:
    """The state of a `status_rows` row, as the page words it."""
    state: IntegrationState = row["state"]
    stuck = state.state is State.STUCK
    return StateView(
        state=state.state.value,
        label=LABELS.get(state.state, row["health"].text),
        level="stuck" if stuck else row["health"].level,
        reason=state.reason,
        fix=state.fix,
        stuck=stuck,
        uninstalled=state.state is State.APP_UNINSTALLED,
        installed_at=state.app_installed_at,
        uninstalled_at=state.app_uninstalled_at,
    )
