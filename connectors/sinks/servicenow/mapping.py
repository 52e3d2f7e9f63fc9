"""Pure mapping between IncidentCommands and ServiceNow incident fields."""

from __future__ import annotations

from typing import Any

from streams.core.models import IncidentCommand

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


def open_fields(cmd: IncidentCommand) -> dict[str, Any]:
    """Fields of a new incident."""
    fields: dict[str, Any] = {
        "short_description": cmd.short_description,
        "description": cmd.description,
        "correlation_id": cmd.correlation_id,
        "correlation_display": CORRELATION_DISPLAY,
        "caller_id": CORRELATION_DISPLAY,
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
    return fields


def update_fields(cmd: IncidentCommand, reopen: bool) -> dict[str, Any]:
    """Fields that record news about the alert (repeat, flap, related alert, escalation) on an incident."""
    note = cmd.work_note or f"Alert notification again ({cmd.alert_count} so far)."
    fields: dict[str, Any] = {"work_notes": f"{note} [command {cmd.command_id}]"}
    if reopen:
        fields["state"] = STATE_IN_PROGRESS
        fields["work_notes"] = f"Reopened: the alert fired again. [command {cmd.command_id}]"
    for name, value in (("impact", cmd.impact), ("urgency", cmd.urgency)):
        if value is not None:
            fields[name] = str(value)
    return fields


def resolve_fields(cmd: IncidentCommand) -> dict[str, Any]:
    """Fields that resolve an incident."""
    return {**RESOLVE_FIELDS, "close_notes": cmd.resolution_note or "Resolved at the monitoring source."}
