"""Timestamp parsing that refuses to guess a time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_rfc3339(text: str, field: str = "timestamp", default_tz: tzinfo | None = None) -> datetime:
    """An aware UTC datetime from RFC 3339 text; naive text is rejected unless default_tz is declared."""
    cleaned = _FRACTION.sub(r"\1", text.strip())  # Go sends nanoseconds; Python keeps microseconds
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not an RFC 3339 timestamp") from None
    if value.tzinfo is None:
        if default_tz is None:
            raise ValueError(f"{field}: {text!r} has no time zone offset and its source declares none")
        value = value.replace(tzinfo=default_tz)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:30:00+01:00 or 9999-12-31T23:59:59-01:00: no UTC instant exists.
        raise ValueError(f"{field}: {text!r} lies outside the calendar in UTC (years 1 to 9999)") from None
