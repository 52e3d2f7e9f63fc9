"""When a maintenance or freeze window is open: one-off and weekly recurring, in a named time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.core.models import MaintenanceWindow, Weekday

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
