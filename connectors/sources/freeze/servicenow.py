"""ServiceNow change blackout schedules (cmn_schedule_blackout with its cmn_schedule_span entries)
as FREEZE windows. Pure mapping, plus the Table API reads.

Entry times are the schedule's wall clock ("20261224T000000", in the schedule's time_zone; a
floating schedule needs --timezone). One-off entries and weekly-style repeats (daily, weekdays,
weekends, weekly with days_of_week 1=Mon..7=Sun, until repeat_until) are imported; other repeat
types (monthly, yearly) are refused with the entry named. A schedule's conditions (which CIs or
changes it applies to) are not evaluated: the scope comes from --scope/--target."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.values import READ_PARAMS, values
from connectors.sources.freeze.mapping import OPEN_ENDED, CalendarError, window_id, zone_named
from streams.core.models import MaintenanceWindow, Recurrence, Weekday, WindowKind, WindowScope

SCHEDULES = "cmn_schedule_blackout"
SPANS = "cmn_schedule_span"
DAYS = [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI, Weekday.SAT, Weekday.SUN]
REPEATS = {
    "daily": "1234567",
    "weekdays": "12345",
    "weekends": "67",
}


def _local(text: str, zone: ZoneInfo, where: str) -> datetime:
    value = text.strip()
    try:
        if value.endswith("Z"):
            return datetime.strptime(value[:-1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=zone).astimezone(UTC)
    except ValueError:
        raise CalendarError(f"{where}: {value!r} is not a schedule date-time (YYYYMMDDTHHMMSS)") from None


def blackout_windows(
    schedules: list[dict[str, Any]],
    spans: list[dict[str, Any]],
    source: str,
    now: datetime,
    scope: WindowScope = WindowScope.GLOBAL,
    target: str = "",
    default_zone: str | None = None,
) -> list[MaintenanceWindow]:
    """Every entry of every blackout schedule as a FREEZE window; CalendarError when one cannot
    be imported faithfully. Rows may carry their fields in any Table API shape (values.py)."""
    by_id = {s["sys_id"]: s for s in map(values, schedules)}
    out: list[MaintenanceWindow] = []
    for span in map(values, spans):
        try:
            window = _entry(by_id, span, source, now, scope, target, default_zone)
        except CalendarError:
            raise
        except (ValueError, OverflowError) as exc:
            raise CalendarError(f"blackout entry {span.get('name') or span.get('sys_id')}: {exc}") from None
        if window is not None:
            out.append(window)
    return out


def _entry(
    by_id: dict[str, dict[str, str]],
    span: dict[str, str],
    source: str,
    now: datetime,
    scope: WindowScope,
    target: str,
    default_zone: str | None,
) -> MaintenanceWindow | None:
    schedule = by_id.get(span.get("schedule", ""))
    if schedule is None:
        return None  # an entry of another kind of schedule
    name = schedule.get("name") or schedule["sys_id"]
    where = f"blackout {name} entry {span.get('name') or span['sys_id']}"
    tz_name = schedule.get("time_zone") or ""
    if tz_name.lower() in ("", "floating"):
        if default_zone is None:
            raise CalendarError(f"{where}: the schedule is floating; give --timezone")
        tz_name = default_zone
    zone = zone_named(tz_name, where)
    start = _local(span.get("start_date_time", ""), zone, where)
    end = _local(span.get("end_date_time", ""), zone, where)
    if end <= start:
        raise CalendarError(f"{where}: ends before it starts")
    repeat = (span.get("repeat_type") or "").lower()
    recurrence, until = None, end
    if repeat:
        days = REPEATS.get(repeat) or (span.get("days_of_week") if repeat == "weekly" else None)
        if not days or any(d not in "1234567" for d in days):
            raise CalendarError(
                f"{where}: repeat type {repeat!r} is not supported (daily, weekdays, weekends, weekly)"
            )
        local = start.astimezone(zone)
        recurrence = Recurrence(
            weekdays=[DAYS[int(d) - 1] for d in sorted(set(days))],
            start_time=f"{local.hour:02d}:{local.minute:02d}",
            duration_minutes=max(1, int((end - start).total_seconds() // 60)),
            timezone=tz_name,
        )
        last = span.get("repeat_until") or ""
        if last:
            d = date(int(last[:4]), int(last[4:6]), int(last[6:8]))
            until = datetime(d.year, d.month, d.day, 23, 59, 59, tzinfo=zone).astimezone(UTC) + (end - start)
        else:
            until = start + OPEN_ENDED
    try:
        return MaintenanceWindow(
            window_id=window_id(source, span["sys_id"]),
            kind=WindowKind.FREEZE,
            scope=scope,
            target=target,
            starts_at=start,
            ends_at=until,
            recurrence=recurrence,
            reason=" - ".join(p for p in (schedule.get("name"), span.get("name")) if p) or "blackout",
            created_by=f"calendar:{source}",
            updated_at=now,
        )
    except ValidationError as exc:
        raise CalendarError(f"{where}: {exc.errors()[0]['msg']}") from None


def read_blackouts(client: ServiceNowClient) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The instance's blackout schedules and their entries, through the Table API."""
    schedules = _all(client, SCHEDULES, "", "sys_id,name,time_zone")
    if not schedules:
        return [], []
    ids = ",".join(s["sys_id"] for s in schedules)
    spans = _all(
        client,
        SPANS,
        f"scheduleIN{ids}",
        "sys_id,schedule,name,start_date_time,end_date_time,repeat_type,days_of_week,repeat_until",
    )
    return schedules, spans


def _all(
    client: ServiceNowClient, table: str, query: str, fields: str, page: int = 200
) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    while True:
        got = client.rows(
            table,
            {
                "sysparm_query": (query + "^" if query else "") + "ORDERBYsys_created_on",
                "sysparm_fields": fields,
                "sysparm_limit": str(page),
                "sysparm_offset": str(len(rows)),
                **READ_PARAMS,
            },
        )
        rows.extend(values(r) for r in got)  # every Table API shape, as stored values
        if len(got) < page:
            return rows
