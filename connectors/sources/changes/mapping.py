"""Pure mapping of ServiceNow change_request rows to ChangeRecords, and of approved changes'
implementation windows to maintenance windows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.sinks.servicenow.values import display, values
from streams.core import telemetry
from streams.core.models import (
    ChangeRecord,
    ChangeStatus,
    ChangeType,
    CloseCode,
    MaintenanceWindow,
    WindowKind,
    WindowScope,
)

# change_request.state: New -5, Assess -4, Authorize -3, Scheduled -2, Implement -1, Review 0,
# Closed 3, Canceled 4.
STATES = {
    "-5": ChangeStatus.REQUESTED,
    "-4": ChangeStatus.REQUESTED,
    "-3": ChangeStatus.REQUESTED,
    "-2": ChangeStatus.SCHEDULED,
    "-1": ChangeStatus.IMPLEMENT,
    "0": ChangeStatus.REVIEW,
    "3": ChangeStatus.CLOSED,
    "4": ChangeStatus.CANCELLED,
}
TYPES = {"standard": ChangeType.STANDARD, "normal": ChangeType.NORMAL, "emergency": ChangeType.EMERGENCY}
CLOSE_CODES = {
    "successful": CloseCode.SUCCESSFUL,
    "successful_issues": CloseCode.SUCCESSFUL_WITH_ISSUES,
    "unsuccessful": CloseCode.UNSUCCESSFUL,
}
FIELDS = (
    "sys_id,number,state,approval,type,short_description,correlation_id,cmdb_ci,business_service,"
    "start_date,end_date,close_code,sys_updated_on,sys_mod_count"
)
IN_FORCE = frozenset({ChangeStatus.APPROVED, ChangeStatus.SCHEDULED, ChangeStatus.IMPLEMENT})


def glide_time(text: str | None) -> datetime | None:
    """ServiceNow's 'YYYY-MM-DD HH:MM:SS' (the Table API answers in UTC) as an aware datetime."""
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def change_record(raw: dict[str, Any], target: str = "servicenow") -> ChangeRecord:
    """One change_request row (fields in any Table API shape, see values.py) as the pipeline's
    ChangeRecord; the CI and service are named by their display values (the names the pipeline
    uses), not sys_ids. Unknown states and types take a declared default and count a metric."""
    row = values(raw)
    state = STATES.get(row.get("state", ""))
    if state is None:
        telemetry.UNMAPPED_VALUES.labels("change.state", target).inc()
        state = ChangeStatus.REQUESTED
    approval = (row.get("approval") or "").lower()
    if approval == "approved" and state is ChangeStatus.REQUESTED:
        state = ChangeStatus.APPROVED  # approved, not yet moved to Scheduled
    if approval == "rejected" and state in IN_FORCE:
        state = ChangeStatus.REQUESTED  # a rejected approval never counts as approved
    kind = TYPES.get((row.get("type") or "").lower())
    if kind is None:
        telemetry.UNMAPPED_VALUES.labels("change.type", target).inc()
        kind = ChangeType.NORMAL
    ci, service = display(raw.get("cmdb_ci")), display(raw.get("business_service"))
    return ChangeRecord(
        change_id=row["number"],
        itsm_id=row["sys_id"],
        target=target,
        correlation_id=row.get("correlation_id") or None,
        change_type=kind,
        status=state,
        approval=approval,
        short_description=row.get("short_description") or "",
        service=service or None,
        ci_ids=[ci] if ci else [],
        planned_start=glide_time(row.get("start_date")),
        planned_end=glide_time(row.get("end_date")),
        close_code=CLOSE_CODES.get((row.get("close_code") or "").lower()),
        updated_at=glide_time(row.get("sys_updated_on")) or datetime.now(UTC),
    )


def maintenance_windows(change: ChangeRecord) -> list[MaintenanceWindow]:
    """The maintenance windows an approved change opens on its CIs (or its service) during its
    planned window; cancelled ones when the change is no longer in force."""
    if (
        change.planned_start is None
        or change.planned_end is None
        or change.planned_end <= change.planned_start
    ):
        return []
    if change.status is ChangeStatus.REQUESTED and change.approval != "rejected":
        return []  # never approved: it never opened a window, there is nothing to cancel
    targets = [(WindowScope.CI, c) for c in change.ci_ids] or (
        [(WindowScope.SERVICE, change.service)] if change.service else []
    )
    return [
        MaintenanceWindow(
            window_id=f"change-{change.change_id}-{target}",
            kind=WindowKind.MAINTENANCE,
            scope=scope,
            target=target,
            starts_at=change.planned_start,
            ends_at=change.planned_end,
            change_id=change.change_id,
            reason=f"{change.change_id}: {change.short_description}"[:200],
            created_by=change.target,
            updated_at=change.updated_at,
            cancelled=change.status not in IN_FORCE,
        )
        for scope, target in targets
    ]
