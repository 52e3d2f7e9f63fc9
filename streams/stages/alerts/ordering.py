"""OrderStage: notifications are ordered by the alert's own times, not by their arrival.

The members of an Alertmanager HA pair (or two gateways, or a retried webhook) notify
independently, so the second member's "firing" can arrive after the first member's "resolved"
for the same alert. Taking arrival order as truth would reopen a resolved incident.
"""

from __future__ import annotations

from streams.core.models import Alert, AlertStatus
from streams.stages.alerts.state import AlertState, AlertWork
from streams.stages.base import Ctx, Dropped, DropReason


def stale_reason(state: AlertState, alert: Alert) -> str | None:
    """Why this notification is older than what the state already applied, or None if it is not.

    An alert episode is named by its start (Alertmanager keeps startsAt while an alert fires and a
    re-fire after a resolve starts anew; the other sources carry the event's own time there), and
    a resolve by its end (endsAt, else its own time):
    - an earlier start than the last applied one is an earlier episode, or an older event;
    - a firing that started before the applied resolve's end belongs to the episode that resolve
      ended: a late notification (the second member of an HA pair), not a new firing.
    """
    applied, status = state.event_starts_at, state.event_status
    if applied is None or status is None:
        return None
    if alert.starts_at < applied:
        return f"starts at {alert.starts_at.isoformat()}, before the applied {applied.isoformat()}"
    ended = state.event_ended_at
    if alert.status is AlertStatus.FIRING and status == AlertStatus.RESOLVED.value and ended is not None:
        if alert.starts_at < ended:
            return (
                f"firing since {alert.starts_at.isoformat()}, before the applied resolve at "
                f"{ended.isoformat()}: a late notification of the episode that resolve ended"
            )
    return None


class OrderStage:
    """Drops (as stale, counted) a notification older than the last applied one; remembers the
    times of every other. A stale notification changes no state."""

    name = "order"

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork | Dropped:
        reason = stale_reason(work.state, work.alert)
        if reason is not None:
            return Dropped(DropReason.STALE, reason)
        alert = work.alert
        work.state.event_starts_at = alert.starts_at
        work.state.event_status = alert.status.value
        resolved = alert.status is AlertStatus.RESOLVED
        work.state.event_ended_at = (alert.ends_at or alert.starts_at) if resolved else None
        return work
