"""ServiceNow change_request rows to ChangeRecords and approved windows to maintenance windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from connectors.sources.changes.mapping import change_record, maintenance_windows
from streams.core.models import ChangeStatus, ChangeType, CloseCode, WindowScope

ROW = {
    "sys_id": "s1",
    "number": "CHG0030001",
    "state": "-5",
    "approval": "requested",
    "type": "normal",
    "short_description": "Upgrade checkout",
    "correlation_id": "",
    "cmdb_ci": "web-1",
    "business_service": "checkout",
    "start_date": "2026-11-27 10:00:00",
    "end_date": "2026-11-27 12:00:00",
    "close_code": "",
    "sys_updated_on": "2026-11-27 09:00:00",
}


@pytest.mark.parametrize(
    ("state", "approval", "status"),
    [
        ("-5", "requested", ChangeStatus.REQUESTED),
        ("-3", "requested", ChangeStatus.REQUESTED),
        ("-3", "approved", ChangeStatus.APPROVED),
        ("-2", "approved", ChangeStatus.SCHEDULED),
        ("-1", "approved", ChangeStatus.IMPLEMENT),
        ("-2", "rejected", ChangeStatus.REQUESTED),
        ("0", "approved", ChangeStatus.REVIEW),
        ("3", "approved", ChangeStatus.CLOSED),
        ("4", "", ChangeStatus.CANCELLED),
    ],
)
def test_states_and_approvals(state: str, approval: str, status: ChangeStatus) -> None:
    assert change_record({**ROW, "state": state, "approval": approval}).status is status


def test_fields_and_times_in_utc() -> None:
    rec = change_record({**ROW, "correlation_id": "gate-1", "close_code": "successful", "type": "emergency"})
    assert (rec.change_id, rec.itsm_id, rec.correlation_id, rec.service, rec.ci_ids) == (
        "CHG0030001",
        "s1",
        "gate-1",
        "checkout",
        ["web-1"],
    )
    assert rec.change_type is ChangeType.EMERGENCY and rec.close_code is CloseCode.SUCCESSFUL
    assert rec.planned_start == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert change_record(ROW).correlation_id is None


def test_unknown_values_take_the_default_and_count() -> None:
    def unmapped() -> float:
        return (
            REGISTRY.get_sample_value(
                "itsm_pipeline_unmapped_values_total", {"rule": "change.type", "source": "servicenow"}
            )
            or 0.0
        )

    before = unmapped()
    assert change_record({**ROW, "type": "expedited", "state": "99"}).change_type is ChangeType.NORMAL
    assert unmapped() == before + 1


def test_an_approved_change_opens_maintenance_on_its_ci_and_a_withdrawn_one_cancels_it() -> None:
    (w,) = maintenance_windows(change_record({**ROW, "state": "-2", "approval": "approved"}))
    assert (w.window_id, w.scope, w.target, w.change_id, w.cancelled) == (
        "change-CHG0030001-web-1",
        WindowScope.CI,
        "web-1",
        "CHG0030001",
        False,
    )
    (gone,) = maintenance_windows(change_record({**ROW, "state": "4"}))
    assert gone.cancelled and gone.window_id == w.window_id
    (svc,) = maintenance_windows(change_record({**ROW, "state": "-1", "cmdb_ci": ""}))
    assert (svc.scope, svc.target) == (WindowScope.SERVICE, "checkout")
    assert maintenance_windows(change_record({**ROW, "start_date": ""})) == []
    assert maintenance_windows(change_record(ROW)) == []  # never approved: no window to open or cancel
    (rejected,) = maintenance_windows(change_record({**ROW, "state": "-2", "approval": "rejected"}))
    assert rejected.cancelled
