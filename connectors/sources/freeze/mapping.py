"""Pure parsing of a change freeze calendar (iCalendar, RFC 5545) into FREEZE windows.

Supported: VEVENT with UID, SUMMARY, DTSTART and DTEND or DURATION (UTC, TZID=<zone> or all-day
dates), STATUS:CANCELLED, RRULE FREQ=WEEKLY with BYDAY and optional UNTIL, and
X-ITSM-SCOPE:<SCOPE>[:<target>] (GLOBAL, ENVIRONMENT:production, SERVICE:checkout, CI:web-1).
Anything else that would change when the freeze applies (other RRULEs, EXDATE, RDATE) is
refused with the line, rather than imported wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)


class CalendarError(ValueError):
    """The calendar cannot be imported faithfully; the message names the event and the problem."""


@dataclass(frozen=True)
class Prop:
    name: str
    params: dict[str, str]
    value: str


def unfold(text: str) -> list[str]:
    """Content lines with RFC 5545 folding undone."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw.strip():
            lines.append(raw)
    return lines


def parse_line(line: str) -> Prop:
    head, sep, value = line.partition(":")
    if not sep:
        raise CalendarError(f"not a content line: {line[:80]!r}")
    name, *params = head.split(";")
    return Prop(
        name.upper(),
        {k.upper(): v.strip('"') for k, _, v in (p.partition("=") for p in params)},
        value,
    )


def _unescape(text: str) -> str:
    return (
        text.replace("\\n", "\n")
        .replace("\\N", "\n")
        .replace("\\,", ",")
        .replace("\\;", ";")
        .replace("\\\\", "\\")
    )


def zone_named(name: str, where: str) -> ZoneInfo:
    """The named time zone; CalendarError naming the event when there is none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError(f"{where}: unknown time zone {name!r}") from None


def parse_time(prop: Prop, default_zone: str | None, where: str) -> tuple[datetime, str | None]:
    """A DTSTART/DTEND/UNTIL value as UTC, and the zone it was given in (None for UTC)."""
    value = prop.value.strip()
    if prop.params.get("VALUE") == "DATE" or re.fullmatch(r"\d{8}", value):
        zone_name = prop.params.get("TZID") or default_zone
        if zone_name is None:
            raise CalendarError(f"{where}: all-day {prop.name} {value} needs a time zone (give --timezone)")
        d = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        local = datetime(d.year, d.month, d.day, tzinfo=zone_named(zone_name, where))
        return local.astimezone(UTC), zone_name
    try:
        naive = datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S")
    except ValueError:
        raise CalendarError(f"{where}: {prop.name} {value!r} is not an iCalendar date-time") from None
    if value.endswith("Z"):
        return naive.replace(tzinfo=UTC), None
    zone_name = prop.params.get("TZID") or default_zone
    if zone_name is None:
        raise CalendarError(
            f"{where}: {prop.name} {value} has no time zone (floating time); give TZID or --timezone"
        )
    return naive.replace(tzinfo=zone_named(zone_name, where)).astimezone(UTC), zone_name


def parse_duration(value: str, where: str) -> timedelta:
    m = DURATION.match(value.strip())
    if not m or not any(m.groupdict().values()):
        raise CalendarError(f"{where}: DURATION {value!r} is not supported (use P#W, P#D, PT#H#M#S)")
    g = {k: int(v or 0) for k, v in m.groupdict().items()}
    return timedelta(weeks=g["w"], days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])


def window_id(source: str, uid: str) -> str:
    return "freeze-" + re.sub(r"[^A-Za-z0-9._@-]+", "-", f"{source}-{uid}")[:180]


def freeze_windows(
    text: str,
    source: str,
    now: datetime,
    scope: WindowScope = WindowScope.GLOBAL,
    target: str = "",
    default_zone: str | None = None,
) -> list[MaintenanceWindow]:
    """Every VEVENT of the calendar as a FREEZE window; CalendarError for what cannot be imported."""
    lines = unfold(text)
    if not lines or lines[0].strip().upper() != "BEGIN:VCALENDAR":
        raise CalendarError("not an iCalendar file (it must start with BEGIN:VCALENDAR)")
    events: list[list[Prop]] = []
    current: list[Prop] | None = None
    for line in lines:
        prop = parse_line(line)
        if prop.name == "BEGIN" and prop.value.upper() == "VEVENT":
            current = []
        elif prop.name == "END" and prop.value.upper() == "VEVENT":
            if current is not None:
                events.append(current)
            current = None
        elif current is not None:
            current.append(prop)
    windows = []
    for n, props in enumerate(events, 1):
        try:
            windows.append(_window(props, n, source, now, scope, target, default_zone))
        except CalendarError:
            raise
        except (ValueError, OverflowError) as exc:
            # A date that does not exist (20261340) or lies beyond what a datetime can hold.
            raise CalendarError(f"event {n}: {exc}") from None
    seen: set[str] = set()
    for w in windows:
        if w.window_id in seen:
            raise CalendarError(
                f"UID of {w.window_id} appears twice (recurrence overrides are not supported)"
            )
        seen.add(w.window_id)
    return windows


def _window(
    props: list[Prop],
    n: int,
    source: str,
    now: datetime,
    scope: WindowScope,
    target: str,
    default_zone: str | None,
) -> MaintenanceWindow:
    by = {p.name: p for p in props}
    uid = by["UID"].value if "UID" in by else None
    where = f"event {n} ({uid or 'no UID'})"
    if uid is None:
        raise CalendarError(f"{where}: has no UID, so a later import could not update or cancel it")
    for unsupported in ("EXDATE", "RDATE", "RECURRENCE-ID"):
        if unsupported in by:
            raise CalendarError(f"{where}: {unsupported} is not supported")
    if "DTSTART" not in by:
        raise CalendarError(f"{where}: has no DTSTART")
    start, zone = parse_time(by["DTSTART"], default_zone, where)
    if "DTEND" in by:
        end, _ = parse_time(by["DTEND"], default_zone, where)
    elif "DURATION" in by:
        end = start + parse_duration(by["DURATION"].value, where)
    else:
        raise CalendarError(f"{where}: has neither DTEND nor DURATION")
    if end <= start:
        raise CalendarError(f"{where}: ends before it starts")
    if "X-ITSM-SCOPE" in by:
        kind, _, aim = by["X-ITSM-SCOPE"].value.partition(":")
        try:
            scope, target = WindowScope(kind.strip().upper()), aim.strip()
        except ValueError:
            raise CalendarError(
                f"{where}: X-ITSM-SCOPE {kind!r} is not one of {[s.value for s in WindowScope]}"
            ) from None
    recurrence = None
    starts_at, ends_at = start, end
    if "RRULE" in by:
        recurrence, ends_at = _weekly(by["RRULE"].value, start, end, zone, default_zone, where)
    try:
        return MaintenanceWindow(
            window_id=window_id(source, uid),
            kind=WindowKind.FREEZE,
            scope=scope,
            target=target,
            starts_at=starts_at,
            ends_at=ends_at,
            recurrence=recurrence,
            reason=_unescape(by["SUMMARY"].value) if "SUMMARY" in by else "change freeze",
            created_by=f"calendar:{source}",
            updated_at=now,
            cancelled=by["STATUS"].value.upper() == "CANCELLED" if "STATUS" in by else False,
        )
    except ValidationError as exc:
        raise CalendarError(f"{where}: {exc.errors()[0]['msg']}") from None


def _weekly(
    rule: str, start: datetime, end: datetime, zone: str | None, default_zone: str | None, where: str
) -> tuple[Recurrence, datetime]:
    parts = dict(p.partition("=")[::2] for p in rule.upper().split(";") if p)
    if parts.get("FREQ") != "WEEKLY" or set(parts) - {"FREQ", "BYDAY", "UNTIL", "INTERVAL", "WKST"}:
        raise CalendarError(f"{where}: RRULE {rule!r} is not supported (only FREQ=WEEKLY;BYDAY=..;UNTIL=..)")
    if parts.get("INTERVAL", "1") != "1":
        raise CalendarError(f"{where}: RRULE INTERVAL other than 1 is not supported")
    zone_name = zone or default_zone or "UTC"
    local = start.astimezone(zone_named(zone_name, where))
    days = parts.get("BYDAY", "").split(",") if parts.get("BYDAY") else [list(DAYS)[local.weekday()]]
    unknown = [d for d in days if d not in DAYS]
    if unknown:
        raise CalendarError(f"{where}: BYDAY {unknown} is not supported (plain MO..SU only)")
    until = OPEN_ENDED + start
    if "UNTIL" in parts:
        until, _ = parse_time(Prop("UNTIL", {}, parts["UNTIL"]), zone_name, where)
    minutes = int((end - start).total_seconds() // 60)
    recurrence = Recurrence(
        weekdays=[DAYS[d] for d in days],
        start_time=f"{local.hour:02d}:{local.minute:02d}",
        duration_minutes=max(minutes, 1),
        timezone=zone_name,
    )
    return recurrence, until + (end - start)
