"""MaintenanceStage: firing alerts without an incident stay quiet while an inhibition, a silence or a
maintenance window covers them."""

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
        labels = work.alert.labels
        service = labels.get("service")
        env = labels.get("env") or labels.get("environment")
        # An inhibition first, as Alertmanager's pipeline asks its inhibitor before its silencer.
        for kind in (WindowKind.INHIBITION, WindowKind.MAINTENANCE):
            found = self.calendar.covering(kind, work.ci, service, env, ctx.now, labels)
            if found is not None:
                break
        if found is None:
            state.suppressed_by = state.suppressed_until = None
            return work
        window, end = found
        state.suppressed_by, state.suppressed_until = window.window_id, end
        state.last_forwarded = ctx.now
        if window.kind is WindowKind.INHIBITION:
            reason, drop = window.reason, DropReason.INHIBITED
        elif window.matchers:
            reason, drop = f"silence {window.window_id}", DropReason.SUPPRESSED
        else:
            reason, drop = f"maintenance window {window.window_id}", DropReason.SUPPRESSED
        work.effects.suppressed.append(Suppression(work.alert, window, reason))
        return Dropped(drop, window.window_id)
