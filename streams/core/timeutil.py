"""Timestamp parsing that refuses to guess a time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _fromisoformat(text: str) -> datetime:
    """datetime.fromisoformat, nanoseconds (Go's) cut to the microseconds Python keeps."""
    stripped = text.strip()
    try:
        return datetime.fromisoformat(stripped)
    except ValueError:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", stripped))


def parse_rfc3339(text: str, field: str = "timestamp", default_tz: tzinfo | None = None) -> datetime:
    """An aware UTC datetime from RFC 3339 text; naive text is rejected unless default_tz is declared."""
    return parse_rfc3339_zoned(text, field, default_tz)[0]


def parse_rfc3339_zoned(
    text: str, field: str = "timestamp", default_tz: tzinfo | None = None
) -> tuple[datetime, str | None]:
    """parse_rfc3339, and the offset the text was given in (zone_of_text) from the same parse."""
    try:
        value = _fromisoformat(text)
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not an RFC 3339 timestamp") from None
    zone = offset_text(value)
    if value.tzinfo is None:
        if default_tz is None:
            raise ValueError(f"{field}: {text!r} has no time zone offset and its source declares none")
        value = value.replace(tzinfo=default_tz)
    try:
        return value.astimezone(UTC), zone
    except OverflowError:
        # e.g. 0001-01-01T00:30:00+01:00 or 9999-12-31T23:59:59-01:00: no UTC instant exists.
        raise ValueError(f"{field}: {text!r} lies outside the calendar in UTC (years 1 to 9999)") from None


_AGE = re.compile(r"^(\d{1,9})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds from an age: 90s, 30m, 2h, 7d, 4w (ValueError otherwise)."""
    match = _AGE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an age like 90s, 30m, 2h, 7d, 4w")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_time_or_age(text: str, now: datetime, field: str = "time") -> datetime:
    """An aware UTC instant from RFC 3339 text, or from an age before now: 90s, 30m, 2h, 7d, 4w."""
    match = _AGE.match(text.strip())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    try:
        return parse_rfc3339(text, field)
    except ValueError:
        raise ValueError(
            f"{field}: {text!r} is neither an RFC 3339 time with an offset nor an age like 30m, 2h, 7d"
        ) from None


def offset_text(moment: datetime) -> str | None:
    """The UTC offset an aware time was given in, as +HH:MM (Z is +00:00); None when naive."""
    offset = moment.utcoffset()
    if offset is None:
        return None
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def zone_of_text(text: object) -> str | None:
    """The offset of an RFC 3339 text (None when it is none, or not one)."""
    if not isinstance(text, str):
        return None
    try:
        return offset_text(_fromisoformat(text))
    except ValueError:
        return None


def localized(moment: datetime, zone: str = "UTC", locale: str = "en_US") -> str:
    """A time as people read it in a zone and locale (CLDR's long format, with the zone's name):
    2 December 2026 at 12:00:00 CET; 2. Dezember 2026 um 12:00:00 MEZ."""
    from zoneinfo import ZoneInfo

    from babel.dates import format_datetime

    return str(format_datetime(moment, format="long", tzinfo=ZoneInfo(zone), locale=locale))
