"""MaintenanceStage: firing alerts without an incident stay quiet while a maintenance window covers them."""

from __future__ import annotations

from datetime import datetime

from streams.core.models import AlertStatus, ConfigurationItem, MaintenanceWindow, WindowKind, WindowScope
from streams.stages.base import Ctx, Dropped, DropReason
from streams.stages.calendar import occurrence_end
from streams.stages.state import AlertWork, CIIndex, IncidentPhase, Suppression, WindowSource


class WindowCalendar:
    """Which window, if any, covers a CI or service at a moment (scopes resolved through topology)."""

    def __init__(
        self, source: WindowSource, cmdb: CIIndex, relationships: frozenset[str], max_depth: int
    ) -> None:
        self.source = source
        self.cmdb = cmdb
        self.relationships = relationships
        self.max_depth = max_depth

    def covering(
        self,
        kind: WindowKind,
        ci: ConfigurationItem | None,
        service: str | None,
        environment: str | None,
        now: datetime,
    ) -> tuple[MaintenanceWindow, datetime] | None:
        """The open window of this kind covering the target that ends last, with that end."""
        best: tuple[MaintenanceWindow, datetime] | None = None
        for window in self.source.windows():
            if window.kind is not kind:
                continue
            end = occurrence_end(window, now)
            if end is None or not self._applies(window, ci, service, environment):
                continue
            if best is None or end > best[1]:
                best = (window, end)
        return best

    def _applies(
        self, w: MaintenanceWindow, ci: ConfigurationItem | None, service: str | None, environment: str | None
    ) -> bool:
        if w.scope is WindowScope.GLOBAL:
            return True
        if w.scope is WindowScope.SERVICE:
            return (bool(service) and service == w.target) or (ci is not None and ci.service == w.target)
        if w.scope is WindowScope.ENVIRONMENT:
            return (environment or (ci.environment if ci else None)) == w.target
        if ci is None:
            return False
        if ci.ci_id == w.target:
            return True
        if w.scope is WindowScope.CI_AND_DEPENDENTS:
            return ci.ci_id in self.cmdb.dependents(w.target, self.relationships, self.max_depth)
        return False


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
        )
        if found is None:
            state.suppressed_by = state.suppressed_until = None
            return work
        window, end = found
        state.suppressed_by, state.suppressed_until = window.window_id, end
        state.last_forwarded = ctx.now
        work.effects.suppressed.append(
            Suppression(work.alert, window, f"maintenance window {window.window_id}")
        )
        return Dropped(DropReason.SUPPRESSED, window.window_id)
