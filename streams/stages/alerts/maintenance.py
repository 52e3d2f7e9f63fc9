"""MaintenanceStage: firing alerts without an incident stay quiet while a maintenance window covers them."""

from __future__ import annotations

from streams.core.models import AlertStatus, WindowKind
from streams.stages.alerts.state import AlertWork, IncidentPhase, Suppression
from streams.stages.base import Ctx, Dropped, DropReason
from streams.stages.windows import WindowCalendar


class MaintenanceStage:
    """Suppresses a firing alert that has no incident yet; resolves and open incidents pass."""

    name = "maintenance"

    def __init__(self, calendar: WindowCalendar) -> None:
        self.calendar = calendar

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork | Dropped:
        state = work.state
        if work.alert.status is not AlertStatus.FIRING or state.phase in (
            IncidentPhase.OPEN,
            IncidentPhase.CLEARING,
        ):
            return work
        found = self.calendar.covering(
            WindowKind.MAINTENANCE,
            work.ci,
            work.alert.labels.get("service"),
            work.alert.labels.get("env") or work.alert.labels.get("environment"),
            ctx.now,
            work.alert.labels,
        )
        if found is None:
            state.suppressed_by = state.suppressed_until = None
            return work
        window, end = found
        state.suppressed_by, state.suppressed_until = window.window_id, end
        state.last_forwarded = ctx.now
        work.effects.suppressed.append(
            Suppression(
                work.alert,
                window,
                f"silence {window.window_id}"
                if window.matchers
                else f"maintenance window {window.window_id}",
            )
        )
        return Dropped(DropReason.SUPPRESSED, window.window_id)
