"""The window calendar: when a maintenance or freeze window is open (one-off and weekly recurring,
in a named time zone) and which open window covers a CI, service or environment."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.models import ConfigurationItem, MaintenanceWindow, Weekday, WindowKind, WindowScope
from streams.stages.cmdb import CIIndex

WEEKDAYS = [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI, Weekday.SAT, Weekday.SUN]


def occurrence_end(window: MaintenanceWindow, now: datetime) -> datetime | None:
    """If window is open at now, when the current occurrence ends; else None."""
    if window.cancelled or not (window.starts_at <= now < window.ends_at):
        return None
    rec = window.recurrence
    if rec is None:
        return window.ends_at
    try:
        zone = ZoneInfo(rec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return None  # unreachable for decoded windows: Recurrence refuses unknown zones
    hour, minute = (int(p) for p in rec.start_time.split(":"))
    local_now = now.astimezone(zone)
    duration = timedelta(minutes=rec.duration_minutes)
    # An occurrence that started on an earlier local day may still be running (e.g. 22:00 + 6h).
    days_back = int(duration / timedelta(days=1)) + 1
    for back in range(days_back + 1):
        day = (local_now - timedelta(days=back)).date()
        if WEEKDAYS[day.weekday()] not in rec.weekdays:
            continue
        # Local wall-clock start, then elapsed time in UTC: a 2-hour window lasts 2 hours even
        # across a DST change (same-zone aware datetimes would compare as wall clock).
        start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
        end = start + duration
        if start <= now < end:
            return min(end, window.ends_at)
    return None


class WindowSource(Protocol):
    """Every known maintenance and freeze window."""

    def windows(self) -> list[MaintenanceWindow]: ...


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
        labels: Mapping[str, str] | None = None,
    ) -> tuple[MaintenanceWindow, datetime] | None:
        """The open window of this kind covering the target that ends last, with that end. A window
        with matchers (a silence, an inhibition) covers only an alert whose labels match them all,
        and never one whose labels match all its except_matchers."""
        best: tuple[MaintenanceWindow, datetime] | None = None
        for window in self.source.windows():
            if window.kind is not kind:
                continue
            end = occurrence_end(window, now)
            if end is None or not self._applies(window, ci, service, environment):
                continue
            if window.matchers and (
                labels is None or not all(m.matcher().matches(labels) for m in window.matchers)
            ):
                continue
            if (
                window.except_matchers
                and labels is not None
                and all(m.matcher().matches(labels) for m in window.except_matchers)
            ):
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
