"""Requests the pipeline opened in Jira Service Management (label itsm-pipeline-incident), read by
JQL on `updated` through the search the deployment has (Cloud: /rest/api/3/search/jql with
nextPageToken; Data Center: /rest/api/2/search with startAt).

JQL dates are in the account's time zone (GET /myself timeZone), minute resolution, so the sync
asks from a minute before its watermark and republishes only what changed. The correlation id is
the "Correlation id:" line the sink writes into the description (ADF on REST API 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.sinks.http import RetryPolicy
from connectors.sinks.jira.client import JiraClient
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.jira.mapping import CORRELATION_LINE, INCIDENT_LABEL
from connectors.sources.incidents.base import readable
from streams.core.models import IncidentRecord, IncidentStatus

PAGE = 100
FIELDS = "status,resolution,resolutiondate,assignee,priority,created,updated,description"


def adf_text(doc: Any) -> str:
    """The text of an Atlassian Document Format value (or a plain string), paragraphs as lines."""
    if isinstance(doc, str):
        return doc
    if not isinstance(doc, dict):
        return ""
    if doc.get("type") == "text":
        return str(doc.get("text", ""))
    parts = [adf_text(child) for child in doc.get("content") or []]
    joiner = "\n" if doc.get("type") == "doc" else ""
    return joiner.join(parts)


def jira_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)


def correlation_of(description: Any) -> str | None:
    for line in adf_text(description).splitlines():
        if line.startswith(CORRELATION_LINE):
            return line[len(CORRELATION_LINE) :].strip() or None
    return None


class JiraIncidents:
    target = "jira"
    pipeline_changes_priority = False  # the Jira sink comments and transitions, never edits fields

    def __init__(self, config: JiraConfig, policy: RetryPolicy) -> None:
        self.client = JiraClient(config, policy, target="jira-incidents")
        self.config = config
        self.actor = config.email
        self._zone: ZoneInfo | None = None

    def _timezone(self) -> ZoneInfo:
        if self._zone is None:
            me = self.client.call("GET", f"/rest/api/{self.client.api}/myself").json()
            try:
                self._zone = ZoneInfo(str(me.get("timeZone") or "UTC"))
            except (ZoneInfoNotFoundError, ValueError):
                self._zone = ZoneInfo("UTC")
        return self._zone

    def changed_since(self, since: datetime | None) -> Iterator[IncidentRecord]:
        jql = f'labels = "{INCIDENT_LABEL}"'
        if since is not None:
            local = (since - timedelta(minutes=1)).astimezone(self._timezone())
            jql += f' AND updated >= "{local.strftime("%Y/%m/%d %H:%M")}"'
        jql += " ORDER BY updated ASC"
        for issue in self._search(jql):
            record = readable(self.target, self.record, issue)
            if record is not None:
                yield record

    def _search(self, jql: str) -> Iterator[dict[str, Any]]:
        if self.client.api == "3":
            token: str | None = None
            while True:
                params = {"jql": jql, "fields": FIELDS, "maxResults": str(PAGE)}
                if token:
                    params["nextPageToken"] = token
                page = self.client.call("GET", "/rest/api/3/search/jql", params=params).json()
                yield from page.get("issues") or []
                token = page.get("nextPageToken")
                if page.get("isLast", True) or not token:
                    return
        start = 0
        while True:
            params = {"jql": jql, "fields": FIELDS, "maxResults": str(PAGE), "startAt": str(start)}
            page = self.client.call("GET", "/rest/api/2/search", params=params).json()
            issues = page.get("issues") or []
            yield from issues
            start += len(issues)
            if not issues or start >= int(page.get("total", 0)):
                return

    def record(self, issue: dict[str, Any]) -> IncidentRecord | None:
        fields = issue.get("fields") or {}
        correlation = correlation_of(fields.get("description"))
        updated = jira_time(fields.get("updated"))
        if correlation is None or updated is None:
            return None
        status = fields.get("status") or {}
        name = str(status.get("name", ""))
        category = str((status.get("statusCategory") or {}).get("key", ""))
        if name.lower() in ("canceled", "cancelled", "declined"):
            state = IncidentStatus.CANCELED
        elif name.lower() == "closed":
            state = IncidentStatus.CLOSED
        elif category == "done":
            state = IncidentStatus.RESOLVED
        else:
            state = IncidentStatus.OPEN
        assignee = fields.get("assignee") or {}
        resolved_at = jira_time(fields.get("resolutiondate")) if state is not IncidentStatus.OPEN else None
        return IncidentRecord(
            target=self.target,
            correlation_id=correlation,
            itsm_id=str(issue.get("id", "")),
            number=str(issue.get("key", "")),
            status=state,
            state=name,
            priority=str((fields.get("priority") or {}).get("name", "")),
            assigned_to=str(assignee.get("displayName") or assignee.get("accountId") or "") or None,
            # Jira records no "resolved by" field (the changelog has it); who resolved is unknown.
            resolved_by=None,
            close_code=str((fields.get("resolution") or {}).get("name", "")) or None,
            opened_at=jira_time(fields.get("created")),
            resolved_at=resolved_at,
            closed_at=resolved_at if state is IncidentStatus.CLOSED else None,
            updated_at=updated,
            updated_by=None,
        )

    def close(self) -> None:
        self.client.http.close()
