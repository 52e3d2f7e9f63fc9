"""Change freeze calendars (iCalendar, RFC 5545) to FREEZE windows.

The file is parsed with `icalendar` (escaping, folding, parameters such as ALTREP, VTIMEZONE
definitions and the Windows zone names of Outlook and Exchange exports) and recurrences are
expanded with `recurring-ical-events` (RRULE of every frequency, RDATE, EXDATE, RECURRENCE-ID
overrides). A plain weekly rule (FREQ=WEEKLY with BYDAY, UNTIL) stays one recurring window in its
zone, open-ended like the calendar; every other recurrence becomes one window per occurrence
within the horizon (re-import to extend it). X-ITSM-SCOPE:<SCOPE>[:<target>] scopes an event
(GLOBAL, ENVIRONMENT:production, SERVICE:checkout, CI:web-1). What cannot be imported faithfully
(a floating time without --timezone, an unknown zone, a rule with more occurrences than a
freeze calendar can mean) is refused with the event named, rather than imported wrong.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
import recurring_ical_events
from pydantic import ValidationError

from streams.core.models import MaintenanceWindow, Recurrence, Weekday, WindowKind, WindowScope

DAYS = {
    "MO": Weekday.MON,
    "TU": Weekday.TUE,
    "WE": Weekday.WED,
    "TH": Weekday.THU,
    "FR": Weekday.FRI,
    "SA": Weekday.SAT,
    "SU": Weekday.SUN,
}
OPEN_ENDED = timedelta(days=3650)
HORIZON = timedelta(days=400)
MAX_OCCURRENCES = 1000  # per event within the horizon: more is not a freeze calendar
WEEKLY_PARTS = {"FREQ", "BYDAY", "UNTIL", "INTERVAL", "WKST"}


class CalendarError(ValueError):
    """The calendar cannot be imported faithfully; the message names the event and the problem."""


def zone_named(name: str, where: str) -> ZoneInfo:
    """The named time zone; CalendarError naming the event when there is none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError(f"{where}: unknown time zone {name!r}") from None


def _is_named_zone(name: str) -> bool:
    """A zone a recurring window can name (a VTIMEZONE of the file alone is expanded instead)."""
    try:
        ZoneInfo(name)
        return True
    except (ZoneInfoNotFoundError, ValueError):
        return False


def window_id(source: str, uid: str) -> str:
    return "freeze-" + re.sub(r"[^A-Za-z0-9._@-]+", "-", f"{source}-{uid}")[:180]


def _zone_name(value: datetime) -> str | None:
    tz = value.tzinfo
    if tz is None or (value.utcoffset() == timedelta(0) and str(tz) in ("UTC", "Etc/UTC", "UTC+00:00")):
        return None
    return getattr(tz, "key", None) or str(tz)


def _aware(
    value: date | datetime, tzid: str | None, default_zone: str | None, what: str, where: str
) -> datetime:
    """A DTSTART/DTEND/occurrence as an aware UTC datetime; floating values take default_zone."""
    if not isinstance(value, datetime):
        zone_name = tzid or default_zone
        if zone_name is None:
            raise CalendarError(f"{where}: all-day {what} {value:%Y%m%d} needs a time zone (give --timezone)")
        local = datetime(value.year, value.month, value.day, tzinfo=zone_named(zone_name, where))
        return local.astimezone(UTC)
    if value.tzinfo is None:
        if tzid:
            # icalendar knows Olson names, Windows names and the file's VTIMEZONEs: none matched.
            raise CalendarError(f"{where}: unknown time zone {tzid!r}")
        if default_zone is None:
            raise CalendarError(
                f"{where}: {what} {value:%Y%m%dT%H%M%S} has no time zone (floating time); "
                "give TZID or --timezone"
            )
        value = value.replace(tzinfo=zone_named(default_zone, where))
    return value.astimezone(UTC)


def _prop_time(event: Any, name: str, default_zone: str | None, where: str) -> datetime:
    prop = event.get(name)
    try:
        value = prop.dt
    except (AttributeError, ValueError) as exc:
        raise CalendarError(f"{where}: {name} is not an iCalendar date-time ({exc})") from None
    return _aware(value, prop.params.get("TZID"), default_zone, name, where)


def freeze_windows(
    text: str,
    source: str,
    now: datetime,
    scope: WindowScope = WindowScope.GLOBAL,
    target: str = "",
    default_zone: str | None = None,
    horizon: timedelta = HORIZON,
) -> list[MaintenanceWindow]:
    """Every VEVENT of the calendar as FREEZE windows; CalendarError for what cannot be imported."""
    if not text.lstrip("\ufeff \t\r\n").upper().startswith("BEGIN:VCALENDAR"):
        raise CalendarError("not an iCalendar file (it must start with BEGIN:VCALENDAR)")
    if not text.rstrip("\r\n \t").upper().endswith("END:VCALENDAR"):
        # A truncated file would cancel the windows of every event cut off: refuse it whole.
        raise CalendarError("not a complete iCalendar file (it must end with END:VCALENDAR)")
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except (ValueError, KeyError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CalendarError(f"not a valid iCalendar file: {first[:200]}") from None
    by_uid: dict[str, list[Any]] = defaultdict(list)
    for n, event in enumerate(calendar.walk("VEVENT"), 1):
        uid = str(event.get("UID") or "")
        if not uid:
            raise CalendarError(
                f"event {n} (no UID): has no UID, so a later import could not update or cancel it"
            )
        by_uid[uid].append((n, event))
    zones = calendar.walk("VTIMEZONE")
    windows: list[MaintenanceWindow] = []
    for uid, events in by_uid.items():
        masters = [(n, e) for n, e in events if "RECURRENCE-ID" not in e]
        if len(masters) != 1:
            n = events[0][0]
            raise CalendarError(
                f"event {n} ({uid}): "
                + (
                    "UID appears twice"
                    if masters
                    else "RECURRENCE-ID without the recurring event it overrides"
                )
            )
        n, master = masters[0]
        where = f"event {n} ({uid})"
        try:
            windows.extend(
                _windows(
                    master,
                    [e for _, e in events],
                    zones,
                    where,
                    source,
                    now,
                    scope,
                    target,
                    default_zone,
                    horizon,
                )
            )
        except CalendarError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            # A date that does not exist (20261340) or lies beyond what a datetime can hold.
            raise CalendarError(f"event {n}: {exc}") from None
    return windows


def _windows(
    event: Any,
    components: list[Any],
    zones: list[Any],
    where: str,
    source: str,
    now: datetime,
    scope: WindowScope,
    target: str,
    default_zone: str | None,
    horizon: timedelta,
) -> list[MaintenanceWindow]:
    if "DTSTART" not in event:
        raise CalendarError(f"{where}: has no DTSTART")
    start = _prop_time(event, "DTSTART", default_zone, where)
    if "DTEND" in event:
        end = _prop_time(event, "DTEND", default_zone, where)
    elif "DURATION" in event:
        end = start + event.get("DURATION").dt
    else:
        raise CalendarError(f"{where}: has neither DTEND nor DURATION")
    if end <= start:
        raise CalendarError(f"{where}: ends before it starts")
    if "X-ITSM-SCOPE" in event:
        kind, _, aim = str(event.get("X-ITSM-SCOPE")).partition(":")
        try:
            scope, target = WindowScope(kind.strip().upper()), aim.strip()
        except ValueError:
            raise CalendarError(
                f"{where}: X-ITSM-SCOPE {kind!r} is not one of {[s.value for s in WindowScope]}"
            ) from None
    base = {
        "kind": WindowKind.FREEZE,
        "scope": scope,
        "target": target,
        "reason": str(event.get("SUMMARY") or "change freeze"),
        "created_by": f"calendar:{source}",
        "updated_at": now,
        "cancelled": str(event.get("STATUS") or "").upper() == "CANCELLED",
    }
    given = event.get("DTSTART").dt
    # The calendar's own zone (TZID) or offset, next to the UTC instants.
    base["source_zone"] = (
        (_zone_name(given) or ("+00:00" if given.tzinfo else default_zone))
        if isinstance(given, datetime)
        else default_zone
    )
    wid = window_id(source, str(event.get("UID")))
    overridden = len(components) > 1
    recurring = any(p in event for p in ("RRULE", "RDATE", "EXDATE")) or overridden
    if not recurring:
        return [_window(where, window_id=wid, starts_at=start, ends_at=end, **base)]
    weekly = _plain_weekly(event, overridden)
    first = event.get("DTSTART").dt
    zone = (_zone_name(first) if isinstance(first, datetime) else None) or default_zone
    if weekly is not None and (zone is None or _is_named_zone(zone)):
        recurrence, until = _weekly(weekly, start, end, zone, where)
        return [_window(where, window_id=wid, starts_at=start, ends_at=until, recurrence=recurrence, **base)]
    return _occurrences(components, zones, where, wid, base, end - start, now, horizon, default_zone)


def _window(where: str, **fields: Any) -> MaintenanceWindow:
    try:
        return MaintenanceWindow(**fields)
    except ValidationError as exc:
        raise CalendarError(f"{where}: {exc.errors()[0]['msg']}") from None


def _plain_weekly(event: Any, overridden: bool) -> dict[str, Any] | None:
    """The RRULE's parts if it is one plain weekly rule that a recurring window expresses exactly."""
    rules = event.get("RRULE")
    if overridden or rules is None or isinstance(rules, list) or "RDATE" in event or "EXDATE" in event:
        return None
    parts = {k.upper(): v for k, v in rules.items()}
    if parts.get("FREQ") != ["WEEKLY"] or set(parts) - WEEKLY_PARTS or parts.get("INTERVAL", [1]) != [1]:
        return None
    if any(str(d).upper() not in DAYS for d in parts.get("BYDAY", [])):
        return None  # BYDAY=1MO and the like
    return parts


def _weekly(
    parts: dict[str, Any], start: datetime, end: datetime, zone_name: str | None, where: str
) -> tuple[Recurrence, datetime]:
    zone_name = zone_name or "UTC"
    local = start.astimezone(zone_named(zone_name, where))
    days = [str(d).upper() for d in parts.get("BYDAY", [])] or [list(DAYS)[local.weekday()]]
    until = start + OPEN_ENDED
    if "UNTIL" in parts:
        until = _aware(parts["UNTIL"][0], None, zone_name, "UNTIL", where)
    minutes = int((end - start).total_seconds() // 60)
    recurrence = Recurrence(
        weekdays=[DAYS[d] for d in dict.fromkeys(days)],
        start_time=f"{local.hour:02d}:{local.minute:02d}",
        duration_minutes=max(minutes, 1),
        timezone=zone_name,
    )
    return recurrence, until + (end - start)


def _occurrences(
    components: list[Any],
    zones: list[Any],
    where: str,
    wid: str,
    base: dict[str, Any],
    length: timedelta,
    now: datetime,
    horizon: timedelta,
    default_zone: str | None,
) -> list[MaintenanceWindow]:
    """One window per occurrence that has not ended by now and starts within the horizon."""
    single = icalendar.Calendar()
    for component in (*zones, *components):
        single.add_component(component)
    out: list[MaintenanceWindow] = []
    try:
        # In start order, from the first occurrence still running: stop at the horizon (or at a
        # count no freeze calendar means; a FREQ=MINUTELY rule must not expand for minutes).
        for occ in recurring_ical_events.of(single).after(now - length):
            o_start = _prop_time(occ, "DTSTART", default_zone, where)
            if o_start >= now + horizon:
                break
            if len(out) >= MAX_OCCURRENCES:
                raise CalendarError(
                    f"{where}: recurs more than {MAX_OCCURRENCES} times within {horizon.days} days; "
                    "not a freeze calendar"
                )
            o_end = _prop_time(occ, "DTEND", default_zone, where) if "DTEND" in occ else o_start + length
            if o_end <= now:
                continue
            cancelled = base["cancelled"] or str(occ.get("STATUS") or "").upper() == "CANCELLED"
            fields = {**base, "cancelled": cancelled, "reason": str(occ.get("SUMMARY") or base["reason"])}
            wid_at = f"{wid}@{o_start:%Y%m%dT%H%M%SZ}"
            out.append(_window(where, window_id=wid_at, starts_at=o_start, ends_at=o_end, **fields))
    except CalendarError:
        raise
    except (recurring_ical_events.InvalidCalendar, ValueError, TypeError) as exc:
        raise CalendarError(f"{where}: its recurrence cannot be expanded: {exc}") from None
    return out
