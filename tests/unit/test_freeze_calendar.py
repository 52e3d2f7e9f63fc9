"""Freeze calendars (iCalendar) to FREEZE windows, and what a re-import changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.sources.freeze.mapping import CalendarError, freeze_windows
from connectors.sources.freeze.source import plan
from streams.core.models import WindowScope
from streams.stages.windows import occurrence_end

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def cal(*events: str) -> str:
    body = "".join(f"BEGIN:VEVENT\r\n{e.strip()}\r\nEND:VEVENT\r\n" for e in events)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{body}END:VCALENDAR\r\n"


BLACK_FRIDAY = """UID:bf-2026
SUMMARY:Black Friday\\, no deploys
DTSTART:20261127T000000Z
DTEND:20261130T000000Z
X-ITSM-SCOPE:ENVIRONMENT:production"""


def test_a_one_off_freeze_in_utc_with_a_scope() -> None:
    (w,) = freeze_windows(cal(BLACK_FRIDAY), "retail", NOW)
    assert (w.window_id, w.kind.value, w.scope, w.target) == (
        "freeze-retail-bf-2026",
        "FREEZE",
        WindowScope.ENVIRONMENT,
        "production",
    )
    assert w.starts_at == datetime(2026, 11, 27, tzinfo=UTC) and w.reason == "Black Friday, no deploys"
    assert w.created_by == "calendar:retail" and not w.cancelled


def test_zones_all_day_events_folding_and_durations() -> None:
    text = cal(
        "UID:xmas\r\nSUMMARY:Christmas\r\n  freeze\r\n"
        "DTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:20261227",
        "UID:eve\r\nDTSTART;TZID=Europe/Berlin:20261231T180000\r\nDURATION:PT8H",
    )
    xmas, eve = freeze_windows(text, "c", NOW, default_zone="Europe/Berlin")
    assert xmas.reason == "Christmas freeze" and xmas.starts_at == datetime(2026, 12, 23, 23, 0, tzinfo=UTC)
    assert eve.starts_at == datetime(2026, 12, 31, 17, 0, tzinfo=UTC) and eve.ends_at == datetime(
        2027, 1, 1, 1, 0, tzinfo=UTC
    )
    assert xmas.scope is WindowScope.GLOBAL


def test_a_weekly_freeze_becomes_a_recurring_window_in_its_zone() -> None:
    text = cal(
        "UID:fri\r\nSUMMARY:No Friday deploys\r\nDTSTART;TZID=America/New_York:20261106T150000\r\n"
        "DTEND;TZID=America/New_York:20261106T235900\r\nRRULE:FREQ=WEEKLY;BYDAY=FR;UNTIL=20270101T000000Z"
    )
    (w,) = freeze_windows(text, "c", NOW)
    assert w.recurrence is not None and [d.value for d in w.recurrence.weekdays] == ["FRI"]
    assert (w.recurrence.start_time, w.recurrence.duration_minutes, w.recurrence.timezone) == (
        "15:00",
        539,
        "America/New_York",
    )
    friday_evening = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)  # 16:00 in New York
    assert occurrence_end(w, friday_evening) is not None
    assert occurrence_end(w, datetime(2026, 11, 26, 21, 0, tzinfo=UTC)) is None  # Thursday


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("UID:a\r\nDTSTART:20261127T100000\r\nDTEND:20261127T110000Z", "floating time"),
        ("UID:a\r\nDTSTART;VALUE=DATE:20261127\r\nDTEND;VALUE=DATE:20261128", "needs a time zone"),
        ("DTSTART:20261127T100000Z\r\nDTEND:20261127T110000Z", "has no UID"),
        ("UID:a\r\nDTSTART:20261127T100000Z", "neither DTEND nor DURATION"),
        ("UID:a\r\nDTSTART:20261127T100000Z\r\nDTEND:20261127T090000Z", "ends before it starts"),
        (
            "UID:a\r\nDTSTART:20261127T100000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=MINUTELY",
            "recurs more than 1000 times",
        ),
        (
            "UID:a\r\nRECURRENCE-ID:20261127T100000Z\r\nDTSTART:20261127T100000Z\r\nDURATION:PT1H",
            "without the",
        ),
        ("UID:a\r\nDTSTART:20261127T100000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=MONTHLY;BYDAY=XX", "event 1"),
        ("UID:a\r\nDTSTART;TZID=Mars/Base:20261127T100000\r\nDURATION:PT1H", "unknown time zone"),
        ("UID:a\r\nDTSTART:20261127T100000Z\r\nDURATION:PT1H\r\nX-ITSM-SCOPE:TEAM:x", "X-ITSM-SCOPE"),
    ],
)
def test_what_cannot_be_imported_faithfully_is_refused_with_the_event(event: str, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        freeze_windows(cal(event), "c", NOW)


def test_not_a_calendar() -> None:
    with pytest.raises(CalendarError, match="BEGIN:VCALENDAR"):
        freeze_windows("hello", "c", NOW)


def test_a_reimport_updates_and_cancels_only_its_own_windows() -> None:
    first = freeze_windows(
        cal(BLACK_FRIDAY, "UID:other\r\nDTSTART:20261201T000000Z\r\nDURATION:P1D"), "retail", NOW
    )
    foreign = freeze_windows(cal("UID:x\r\nDTSTART:20261201T000000Z\r\nDURATION:P1D"), "finance", NOW)
    changed = freeze_windows(cal(BLACK_FRIDAY.replace("Black Friday", "Cyber Week")), "retail", NOW)
    actions = {(p.action, p.window.window_id) for p in plan(changed, first + foreign, "retail", NOW)}
    assert actions == {("changed", "freeze-retail-bf-2026"), ("cancelled", "freeze-retail-other")}
    same = plan(first, first, "retail", NOW)
    assert {p.action for p in same} == {"unchanged"}


def test_servicenow_blackout_entries_become_freeze_windows_in_the_schedule_zone() -> None:
    from connectors.sources.freeze.servicenow import blackout_windows

    schedules = [{"sys_id": "b1", "name": "Year-end freeze", "time_zone": "Europe/Berlin"}]
    spans = [
        {
            "sys_id": "s1",
            "schedule": "b1",
            "name": "Holidays",
            "start_date_time": "20261224T000000",
            "end_date_time": "20270102T000000",
            "repeat_type": "",
        },
        {
            "sys_id": "s2",
            "schedule": "b1",
            "name": "Fridays",
            "start_date_time": "20261106T150000",
            "end_date_time": "20261106T230000",
            "repeat_type": "weekly",
            "days_of_week": "5",
            "repeat_until": "20261231",
        },
        {
            "sys_id": "s3",
            "schedule": "other",
            "name": "not a blackout",
            "start_date_time": "20261224T000000",
            "end_date_time": "20261225T000000",
        },
    ]
    once, fridays = blackout_windows(schedules, spans, "snow", NOW, WindowScope.ENVIRONMENT, "production")
    assert (once.window_id, once.reason, once.scope, once.target) == (
        "freeze-snow-s1",
        "Year-end freeze - Holidays",
        WindowScope.ENVIRONMENT,
        "production",
    )
    assert once.starts_at == datetime(2026, 12, 23, 23, 0, tzinfo=UTC) and once.recurrence is None
    assert fridays.recurrence is not None and [d.value for d in fridays.recurrence.weekdays] == ["FRI"]
    assert (fridays.recurrence.start_time, fridays.recurrence.duration_minutes) == ("15:00", 480)
    assert occurrence_end(fridays, datetime(2026, 11, 27, 15, 0, tzinfo=UTC)) is not None  # 16:00 in Berlin


@pytest.mark.parametrize(
    ("schedule", "span", "message"),
    [
        ({"time_zone": "floating"}, {}, "floating; give --timezone"),
        ({"time_zone": "Mars/Base"}, {}, "unknown time zone"),
        ({}, {"repeat_type": "monthly"}, "'monthly' is not supported"),
        ({}, {"end_date_time": "20261101T000000"}, "ends before it starts"),
        ({}, {"start_date_time": "2026-12-01"}, "is not a schedule date-time"),
    ],
)
def test_blackouts_that_cannot_be_imported_faithfully_are_refused(
    schedule: dict[str, str], span: dict[str, str], message: str
) -> None:
    from connectors.sources.freeze.servicenow import blackout_windows

    s = {"sys_id": "b1", "name": "B", "time_zone": "UTC", **schedule}
    e = {
        "sys_id": "s1",
        "schedule": "b1",
        "start_date_time": "20261201T000000",
        "end_date_time": "20261202T000000",
        **span,
    }
    with pytest.raises(CalendarError, match=message):
        blackout_windows([s], [e], "snow", NOW)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            "UID:a\r\nDTSTART;VALUE=DATE:20261340\r\nDTEND;VALUE=DATE:20261341",
            r"event 1 \(a\): DTSTART is not an iCalendar date-time .*Wrong date format 20261340",
        ),
        (
            "UID:a\r\nDTSTART:20261127T100000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=WEEKLY;UNTIL=99991231T235959Z",
            "event 1",
        ),
    ],
)
def test_impossible_dates_are_calendar_errors_not_crashes(event: str, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        freeze_windows(cal(event), "c", NOW, default_zone="UTC")


def test_an_impossible_blackout_repeat_until_is_a_calendar_error() -> None:
    from connectors.sources.freeze.servicenow import blackout_windows

    s = {"sys_id": "b1", "name": "B", "time_zone": "UTC"}
    e = {"sys_id": "s1", "schedule": "b1", "start_date_time": "20261201T000000",
         "end_date_time": "20261202T000000", "repeat_type": "daily", "repeat_until": "20261399"}  # fmt: skip
    with pytest.raises(CalendarError, match="blackout entry s1"):
        blackout_windows([s], [e], "snow", NOW)


def test_parameters_escapes_and_windows_zone_names_import_as_written() -> None:
    # A property split at its first ':' turned ALTREP's URL into the summary; an escaped backslash
    # before n became a newline; Outlook and Exchange name zones the Windows way.
    text = cal(
        'UID:peak\r\nSUMMARY;ALTREP="http://intranet/freeze":Peak season freeze\r\n'
        "DTSTART;TZID=W. Europe Standard Time:20261201T100000\r\n"
        "DTEND;TZID=W. Europe Standard Time:20261201T120000",
        "UID:path\r\nSUMMARY:Share C:\\\\new\\, read-only\\nuntil noon\r\n"
        "DTSTART:20261202T080000Z\r\nDURATION:PT4H",
    )
    peak, path = freeze_windows(text, "c", NOW)
    assert peak.reason == "Peak season freeze"
    assert (peak.starts_at, peak.ends_at) == (
        datetime(2026, 12, 1, 9, tzinfo=UTC),
        datetime(2026, 12, 1, 11, tzinfo=UTC),
    )
    assert path.reason == "Share C:\\new, read-only\nuntil noon"


def test_exdate_rdate_and_monthly_rules_become_their_occurrences() -> None:
    text = cal(
        # First Monday of every month, 08:00-18:00 Berlin, except January; plus a one-off extra day.
        "UID:monthly\r\nSUMMARY:Month-end close\r\n"
        "DTSTART;TZID=Europe/Berlin:20261207T080000\r\nDTEND;TZID=Europe/Berlin:20261207T180000\r\n"
        "RRULE:FREQ=MONTHLY;BYDAY=1MO;COUNT=4\r\n"
        "EXDATE;TZID=Europe/Berlin:20270104T080000\r\n"
        "RDATE;TZID=Europe/Berlin:20261215T080000",
        "UID:yearly\r\nDTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:20261227\r\nRRULE:FREQ=YEARLY",
    )
    windows = freeze_windows(text, "fin", NOW, default_zone="Europe/Berlin")
    monthly = sorted((w for w in windows if "monthly" in w.window_id), key=lambda w: w.starts_at)
    assert [w.starts_at for w in monthly] == [
        datetime(2026, 12, 7, 7, tzinfo=UTC),
        datetime(2026, 12, 15, 7, tzinfo=UTC),  # RDATE
        datetime(2027, 2, 1, 7, tzinfo=UTC),  # January 4th excluded
        datetime(2027, 3, 1, 7, tzinfo=UTC),
    ]
    assert all(w.ends_at - w.starts_at == timedelta(hours=10) and w.recurrence is None for w in monthly)
    assert monthly[0].window_id == "freeze-fin-monthly@20261207T070000Z"
    assert all(w.reason == "Month-end close" for w in monthly)
    yearly = [w for w in windows if "yearly" in w.window_id]
    # Within the 400-day horizon (a re-import extends it).
    assert [w.starts_at for w in yearly] == [
        datetime(2026, 12, 23, 23, tzinfo=UTC),
        datetime(2027, 12, 23, 23, tzinfo=UTC),
    ]
    shorter = freeze_windows(text, "fin", NOW, default_zone="Europe/Berlin", horizon=timedelta(days=30))
    assert sorted(w.starts_at for w in shorter) == [
        datetime(2026, 12, 7, 7, tzinfo=UTC),
        datetime(2026, 12, 15, 7, tzinfo=UTC),
        datetime(2026, 12, 23, 23, tzinfo=UTC),
    ]


def test_a_moved_or_cancelled_occurrence_follows_its_override() -> None:
    text = cal(
        "UID:weekly\r\nSUMMARY:Release freeze\r\nDTSTART:20261130T160000Z\r\nDURATION:PT2H\r\n"
        "RRULE:FREQ=WEEKLY;COUNT=3",
        "UID:weekly\r\nRECURRENCE-ID:20261207T160000Z\r\nSUMMARY:Moved\r\n"
        "DTSTART:20261208T100000Z\r\nDURATION:PT2H",
        "UID:weekly\r\nRECURRENCE-ID:20261214T160000Z\r\nSTATUS:CANCELLED\r\n"
        "DTSTART:20261214T160000Z\r\nDURATION:PT2H",
    )
    windows = sorted(freeze_windows(text, "c", NOW), key=lambda w: w.starts_at)
    assert [(w.starts_at, w.reason, w.cancelled) for w in windows] == [
        (datetime(2026, 11, 30, 16, tzinfo=UTC), "Release freeze", False),
        (datetime(2026, 12, 8, 10, tzinfo=UTC), "Moved", False),
        (datetime(2026, 12, 14, 16, tzinfo=UTC), "Release freeze", True),
    ]
