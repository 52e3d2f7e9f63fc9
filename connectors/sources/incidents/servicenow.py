"""Incidents the pipeline opened in ServiceNow (correlation_display = itsm-pipeline), read from the
incident table by sys_updated_on, in any field shape (values.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.mapping import CORRELATION_DISPLAY, INCIDENT_TABLE
from connectors.sinks.servicenow.values import display, value
from connectors.sources.changes.mapping import glide_time
from connectors.sources.incidents.base import readable
from streams.core import telemetry
from streams.core.models import IncidentRecord, IncidentStatus

PAGE = 200
STATUS = {
    "1": IncidentStatus.OPEN,
    "2": IncidentStatus.OPEN,
    "3": IncidentStatus.OPEN,
    "6": IncidentStatus.RESOLVED,
    "7": IncidentStatus.CLOSED,
    "8": IncidentStatus.CANCELED,
}
FIELDS = (
    "sys_id,number,state,priority,assigned_to,assignment_group,resolved_by,resolved_at,closed_at,"
    "close_code,opened_at,sys_updated_on,sys_updated_by,correlation_id"
)


class ServiceNowIncidents:
    target = "servicenow"
    pipeline_changes_priority = True

    def __init__(self, client: ServiceNowClient) -> None:
        self.client = client
        self.actor = client.config.user
        self._me: str | None = None

    def _my_sys_id(self) -> str:
        if self._me is None:
            rows = self.client.rows(
                "sys_user",
                {
                    "sysparm_query": f"user_name={self.actor}",
                    "sysparm_fields": "sys_id",
                    "sysparm_limit": "1",
                },
            )
            self._me = value(rows[0].get("sys_id")) if rows else ""
        return self._me

    def changed_since(self, since: datetime | None) -> Iterator[IncidentRecord]:
        query = f"correlation_display={CORRELATION_DISPLAY}^correlation_idISNOTEMPTY^"
        if since is not None:
            query += f"sys_updated_on>={since.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')}^"
        query += "ORDERBYsys_updated_on"
        for row in self.client.every_row(INCIDENT_TABLE, query, FIELDS, PAGE):
            record = readable(self.target, self.record, row)
            if record is not None:
                yield record

    def record(self, row: dict[str, Any]) -> IncidentRecord | None:
        state = value(row.get("state"))
        status = STATUS.get(state)
        if status is None:
            telemetry.UNMAPPED_VALUES.labels("incident.state", self.target).inc()
            status = IncidentStatus.OPEN
        updated = glide_time(value(row.get("sys_updated_on")))
        if updated is None or not value(row.get("correlation_id")):
            return None
        resolved_by = value(row.get("resolved_by"))
        return IncidentRecord(
            target=self.target,
            correlation_id=value(row.get("correlation_id")),
            itsm_id=value(row.get("sys_id")),
            number=value(row.get("number")),
            status=status,
            state=display(row.get("state")),
            priority=value(row.get("priority")),
            assigned_to=display(row.get("assigned_to")) or None,
            assignment_group=display(row.get("assignment_group")) or None,
            resolved_by=display(row.get("resolved_by")) or None,
            resolved_by_pipeline=bool(resolved_by) and resolved_by == self._my_sys_id(),
            close_code=value(row.get("close_code")) or None,
            opened_at=glide_time(value(row.get("opened_at"))),
            resolved_at=glide_time(value(row.get("resolved_at")))
            if status is not IncidentStatus.OPEN
            else None,
            closed_at=glide_time(value(row.get("closed_at"))),
            updated_at=updated,
            updated_by=value(row.get("sys_updated_by")) or None,
        )

    def close(self) -> None:
        self.client.close()
