"""ServiceNow rows in every shape the Table API answers (sysparm_display_value=false|true|all,
with or without sysparm_exclude_reference_link): change sync and the blackout import read them all.

Shapes per the Table API reference (GET /now/table/{tableName}):
https://developer.servicenow.com/dev.do#!/reference/api/latest/rest/c_TableAPI
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.sinks.servicenow.values import display, value, values
from connectors.sources.changes.mapping import change_record
from connectors.sources.freeze.servicenow import blackout_windows
from streams.core.models import ChangeStatus, ChangeType, WindowScope

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
BASE = "https://example.service-now.com/api/now/table"

# A change row as stored (value) and as displayed (display value); references point at records
# whose display fields are the names the pipeline uses.
STORED: dict[str, str] = {
    "sys_id": "9d385017c611228701d22104cc95c371",
    "number": "CHG0030002",
    "state": "-2",
    "approval": "approved",
    "type": "normal",
    "short_description": "Upgrade checkout",
    "correlation_id": "",
    "cmdb_ci": "b0c25d1bc0a800090168be1bfcdcd759",
    "business_service": "27d32778c0a8000b00db970eeaa60f16",
    "start_date": "2026-12-01 10:00:00",
    "end_date": "2026-12-01 12:00:00",
    "close_code": "",
    "sys_updated_on": "2026-11-30 09:00:00",
    "sys_mod_count": "3",
}
SHOWN = STORED | {
    "state": "Scheduled",
    "approval": "Approved",
    "type": "Normal",
    "cmdb_ci": "web-1",
    "business_service": "checkout",
    "start_date": "2026-12-01 11:00:00",  # the user's time zone (Europe/Berlin)
    "end_date": "2026-12-01 13:00:00",
    "sys_updated_on": "2026-11-30 10:00:00",
}
REFERENCES = {"cmdb_ci": "cmdb_ci", "business_service": "cmdb_ci_service", "schedule": "cmn_schedule"}


def shaped(
    stored: dict[str, str], shown: dict[str, str], table_of: dict[str, str], shape: str
) -> dict[str, Any]:
    """The row as the Table API answers it in one shape."""
    out: dict[str, Any] = {}
    for name, v in stored.items():
        ref = table_of.get(name)
        link = f"{BASE}/{ref}/{v}" if ref and v else None
        if shape == "false":  # the default: references as {"link", "value"}
            out[name] = {"link": link, "value": v} if link else v
        elif shape == "false-exclude":  # sysparm_exclude_reference_link=true
            out[name] = v
        elif shape == "true":  # display values only
            out[name] = {"link": link, "display_value": shown[name]} if link else shown[name]
        elif shape == "all":
            out[name] = {"display_value": shown[name], "value": v} | ({"link": link} if link else {})
        elif shape == "all-exclude":
            out[name] = {"display_value": shown[name], "value": v}
    return out


SHAPES = ["false", "false-exclude", "true", "all", "all-exclude"]


def test_value_and_display_read_every_documented_shape() -> None:
    assert [value(x) for x in ("a", {"link": "u", "value": "a"}, {"display_value": "A", "value": "a"})] == [
        "a"
    ] * 3
    assert [display(x) for x in ("a", {"link": "u", "value": "a"}, {"display_value": "A", "value": "a"})] == [
        "a", "a", "A",
    ]  # fmt: skip
    assert value({"link": "u", "display_value": "A"}) == "A" and display(None) == value(None) == ""


@pytest.mark.parametrize("shape", ["all", "all-exclude"])
def test_change_sync_reads_what_it_asks_for_names_included(shape: str) -> None:
    # The reader asks for display_value=all: stored values for state and times, names for the CI
    # and service (the names the rest of the pipeline uses, never sys_ids).
    record = change_record(shaped(STORED, SHOWN, REFERENCES, shape))
    assert (record.change_id, record.status, record.change_type) == (
        "CHG0030002", ChangeStatus.SCHEDULED, ChangeType.NORMAL,
    )  # fmt: skip
    assert (record.ci_ids, record.service) == (["web-1"], "checkout")
    assert record.planned_start == datetime(2026, 12, 1, 10, tzinfo=UTC)  # the stored UTC value


@pytest.mark.parametrize("shape", ["false", "false-exclude"])
def test_change_sync_reads_the_default_shape_without_failing(shape: str) -> None:
    record = change_record(shaped(STORED, SHOWN, REFERENCES, shape))
    assert (record.change_id, record.status) == ("CHG0030002", ChangeStatus.SCHEDULED)
    assert record.ci_ids == [STORED["cmdb_ci"]]  # no display value in this shape: the sys_id


def test_change_sync_reads_a_display_only_row_without_failing() -> None:
    record = change_record(shaped(STORED, SHOWN, REFERENCES, "true"))
    assert record.change_id == "CHG0030002" and record.ci_ids == ["web-1"]
    assert record.status is ChangeStatus.APPROVED  # a label is no state value: REQUESTED, then approved


@pytest.mark.parametrize("shape", SHAPES)
def test_the_blackout_import_reads_every_shape(shape: str) -> None:
    schedule = {"sys_id": "b1", "name": "Year-end freeze", "time_zone": "Europe/Berlin"}
    span = {
        "sys_id": "s1",
        "schedule": "b1",
        "name": "Holidays",
        "start_date_time": "20261224T000000",
        "end_date_time": "20270102T000000",
        "repeat_type": "",
    }
    schedules = [shaped(schedule, schedule, REFERENCES, shape)]
    spans = [shaped(span, span | {"schedule": "Year-end freeze"}, REFERENCES, shape)]
    if shape == "true":
        # Display values only: the entry names its schedule by name, not sys_id; nothing matches.
        assert blackout_windows(schedules, spans, "snow", NOW) == []
        return
    (window,) = blackout_windows(schedules, spans, "snow", NOW, WindowScope.GLOBAL)
    assert (window.window_id, window.reason) == ("freeze-snow-s1", "Year-end freeze - Holidays")
    assert window.starts_at == datetime(2026, 12, 23, 23, tzinfo=UTC)


def test_values_flattens_a_row() -> None:
    row = shaped(STORED, SHOWN, REFERENCES, "all")
    assert values(row) == STORED
