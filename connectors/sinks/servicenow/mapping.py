"""Pure mapping between IncidentCommands and ServiceNow incident fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.core.models import ChangeCommand, ChangeType, CloseCode, IncidentCommand

INCIDENT_TABLE = "incident"
CHANGE_TABLE = "change_request"

# ServiceNow incident states (incident.state choice list).
STATE_NEW = "1"
STATE_IN_PROGRESS = "2"
STATE_ON_HOLD = "3"
STATE_RESOLVED = "6"
STATE_CLOSED = "7"
STATE_CANCELED = "8"
INACTIVE_STATES = frozenset({STATE_RESOLVED, STATE_CLOSED, STATE_CANCELED})

# What the pipeline writes when the monitoring source reports the condition cleared.
RESOLVE_FIELDS = {"state": STATE_RESOLVED, "close_code": "Resolved by caller"}
CORRELATION_DISPLAY = "itsm-pipeline"
LOOKUP_FIELDS = "sys_id,number,state,correlation_id,sys_updated_on"


def lookup_query(correlation_id: str) -> dict[str, str]:
    """Query parameters finding the newest record with this correlation id."""
    if "^" in correlation_id or "\n" in correlation_id:
        raise ValueError(f"correlation id {correlation_id!r} contains a query operator")
    return {
        "sysparm_query": f"correlation_id={correlation_id}^ORDERBYDESCsys_created_on",
        "sysparm_fields": LOOKUP_FIELDS,
        "sysparm_limit": "1",
    }


def open_fields(cmd: IncidentCommand, caller: str) -> dict[str, Any]:
    """Fields of a new incident; reference fields hold names (the sink binds them to sys_ids)."""
    fields: dict[str, Any] = {
        "short_description": cmd.short_description,
        "description": cmd.description,
        "correlation_id": cmd.correlation_id,
        "correlation_display": CORRELATION_DISPLAY,
        "caller_id": caller,
        "contact_type": "monitoring",
    }
    for name, value in (
        ("impact", cmd.impact),
        ("urgency", cmd.urgency),
        ("cmdb_ci", cmd.ci_id),
        ("business_service", cmd.service),
        ("assignment_group", cmd.assignment_group),
    ):
        if value is not None:
            fields[name] = str(value)
    # What the incident's route sets (routes.toml: assignment group, category, custom u_* columns);
    # it wins over the CI owner's group.
    fields.update(cmd.target_fields.get("servicenow", {}))
    return fields


def update_fields(cmd: IncidentCommand, reopen: bool, start_work: bool = False) -> dict[str, Any]:
    """Fields that record news about the alert (repeat, flap, related alert, escalation) on an
    incident; start_work (an acknowledgement of a New incident) moves it to In Progress."""
    note = cmd.work_note or f"Alert notification again ({cmd.alert_count} so far)."
    fields: dict[str, Any] = {"work_notes": f"{note} [command {cmd.command_id}]"}
    if start_work:
        fields["state"] = STATE_IN_PROGRESS
    if reopen:
        fields["state"] = STATE_IN_PROGRESS
        reason = cmd.work_note or "Reopened: the alert fired again."
        fields["work_notes"] = f"{reason} [command {cmd.command_id}]"
    for name, value in (("impact", cmd.impact), ("urgency", cmd.urgency)):
        if value is not None:
            fields[name] = str(value)
    return fields


def resolve_fields(cmd: IncidentCommand) -> dict[str, Any]:
    """Fields that resolve an incident."""
    return {**RESOLVE_FIELDS, "close_notes": cmd.resolution_note or "Resolved at the monitoring source."}


# change_request.state: New -5, Assess -4, Authorize -3, Scheduled -2, Implement -1, Review 0,
# Closed 3, Canceled 4.
CHANGE_STATE_NEW = "-5"
CHANGE_STATE_CLOSED = "3"
CHANGE_INACTIVE_STATES = frozenset({"3", "4"})
CHANGE_TYPE = {
    ChangeType.STANDARD: "standard",
    ChangeType.NORMAL: "normal",
    ChangeType.EMERGENCY: "emergency",
}
CLOSE_CODE = {
    CloseCode.SUCCESSFUL: "successful",
    CloseCode.SUCCESSFUL_WITH_ISSUES: "successful_issues",
    CloseCode.UNSUCCESSFUL: "unsuccessful",
}


def _glide_time(value: datetime | None) -> str | None:
    """ServiceNow's glide date-time text (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else None


def _enrichment(cmd: ChangeCommand) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if cmd.commit_ids:
        fields["u_commit_ids"] = ",".join(cmd.commit_ids)
    if cmd.build_number:
        fields["u_build_number"] = cmd.build_number
    if cmd.deploy_duration_ms is not None:
        fields["u_deploy_duration_ms"] = str(cmd.deploy_duration_ms)
    return fields


def change_create_fields(cmd: ChangeCommand) -> dict[str, Any]:
    """Fields of a new change request; reference fields hold names (the sink binds them)."""
    fields: dict[str, Any] = {
        "short_description": cmd.short_description,
        "description": cmd.description,
        "type": CHANGE_TYPE[cmd.change_type],
        "state": CHANGE_STATE_NEW,
        "correlation_id": cmd.correlation_id,
        "correlation_display": CORRELATION_DISPLAY,
        "justification": cmd.justification,
        "requested_by": cmd.requested_by,
    }
    for name, value in (
        ("cmdb_ci", cmd.ci_ids[0] if cmd.ci_ids else None),
        ("business_service", cmd.service),
        ("start_date", _glide_time(cmd.planned_start)),
        ("end_date", _glide_time(cmd.planned_end)),
    ):
        if value:
            fields[name] = value
    return {**fields, **_enrichment(cmd)}


def change_update_fields(cmd: ChangeCommand) -> dict[str, Any]:
    """Enrichment of an existing change (what was deployed), with a work note."""
    note = cmd.description or "Change updated by the pipeline."
    return {**_enrichment(cmd), "work_notes": f"{note} [command {cmd.command_id}]"}


def change_close_fields(cmd: ChangeCommand) -> dict[str, Any]:
    """Close a change with its outcome."""
    code = CLOSE_CODE[cmd.close_code or CloseCode.SUCCESSFUL]
    notes = cmd.description or f"Closed {code} by the pipeline."
    return {**_enrichment(cmd), "state": CHANGE_STATE_CLOSED, "close_code": code, "close_notes": notes}
