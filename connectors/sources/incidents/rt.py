"""Tickets the pipeline opened in Request Tracker (those with the correlation custom field), read
with TicketSQL on LastUpdated (ISO 8601 in UTC, which RT parses as given) through REST 2."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.sinks.http import RetryPolicy
from connectors.sinks.rt.client import RTClient
from connectors.sinks.rt.config import RTConfig
from connectors.sources.incidents.base import readable
from streams.core.models import IncidentRecord, IncidentStatus

PAGE = 100
FIELDS = "Status,Owner,Priority,Resolved,Created,LastUpdated,LastUpdatedBy,CustomFields"
STATUS = {
    "new": IncidentStatus.OPEN,
    "open": IncidentStatus.OPEN,
    "stalled": IncidentStatus.OPEN,
    "resolved": IncidentStatus.RESOLVED,
    "rejected": IncidentStatus.CANCELED,
    "deleted": IncidentStatus.CANCELED,
}
NEVER = "1970-01-01T00:00:00Z"  # RT's "not set" date


def rt_time(text: str | None) -> datetime | None:
    if not text or text == NEVER:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _user(raw: Any) -> str | None:
    name = str(raw.get("id", "")) if isinstance(raw, dict) else str(raw or "")
    return None if name in ("", "Nobody") else name


class RTIncidents:
    target = "rt"
    pipeline_changes_priority = False  # the RT sink comments and sets status, never Priority

    def __init__(self, config: RTConfig, policy: RetryPolicy) -> None:
        self.client = RTClient(config, policy, target="rt-incidents")
        self.config = config
        self.actor = config.user

    def changed_since(self, since: datetime | None) -> Iterator[IncidentRecord]:
        query = (
            f"Queue = '{self.config.incident_queue}' AND CF.{{{self.config.correlation_field}}} IS NOT NULL"
        )
        if since is not None:
            at = (since - timedelta(seconds=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            query += f" AND LastUpdated >= '{at}'"
        page = 1
        while True:
            params = {
                "query": query,
                "fields": FIELDS,
                "per_page": str(PAGE),
                "page": str(page),
                "orderby": "LastUpdated",
                "order": "ASC",
            }
            data = self.client.call("GET", "/tickets", params=params).json()
            for item in data.get("items") or []:
                record = readable(self.target, self.record, item)
                if record is not None:
                    yield record
            if not data.get("next_page"):
                return
            page += 1

    def record(self, item: dict[str, Any]) -> IncidentRecord | None:
        values = {
            str(cf.get("name")): list(cf.get("values") or [])
            for cf in item.get("CustomFields") or []
            if isinstance(cf, dict)
        }
        correlation = (values.get(self.config.correlation_field) or [None])[0]
        updated = rt_time(item.get("LastUpdated"))
        if not correlation or updated is None:
            return None
        status = STATUS.get(str(item.get("Status", "")), IncidentStatus.OPEN)
        updated_by = _user(item.get("LastUpdatedBy"))
        resolved_at = rt_time(item.get("Resolved")) if status is IncidentStatus.RESOLVED else None
        return IncidentRecord(
            target=self.target,
            correlation_id=str(correlation),
            itsm_id=str(item.get("id", "")),
            number=str(item.get("id", "")),
            status=status,
            state=str(item.get("Status", "")),
            priority=str(item.get("Priority", "")),
            assigned_to=_user(item.get("Owner")),
            # RT records who last updated a ticket, not who resolved it: the last updater of a
            # resolved ticket is taken as its resolver.
            resolved_by=updated_by if resolved_at else None,
            resolved_by_pipeline=bool(resolved_at) and updated_by == self.actor,
            opened_at=rt_time(item.get("Created")),
            resolved_at=resolved_at,
            updated_at=updated,
            updated_by=updated_by,
        )

    def close(self) -> None:
        self.client.http.close()
