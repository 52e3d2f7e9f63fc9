"""RTSink: tickets in configurable queues, found again by a correlation-id custom field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.sinks.http import HttpCaller, RetryPolicy, SinkError, with_lookup_retries
from connectors.sinks.known import KnownIds
from connectors.sinks.ratelimit import RateLimiter
from connectors.sinks.rt.config import RTConfig
from streams.core import telemetry
from streams.core.dlq import ErrorClass
from streams.core.models import (
    ChangeAction,
    ChangeCommand,
    CloseCode,
    IncidentAction,
    IncidentCommand,
    RecordType,
    SinkOutcome,
    SinkResult,
)

INACTIVE = {"resolved", "rejected", "deleted"}


class RTSink:
    name = "rt"

    def __init__(
        self,
        config: RTConfig,
        policy: RetryPolicy,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        resolved_policy: str = "reopen",
        known: KnownIds | None = None,
    ) -> None:
        self.config = config
        self.resolved_policy = resolved_policy
        self.known = known
        self.http = httpx.Client(
            base_url=config.base_url,
            auth=(config.user, config.password.get_secret_value()),
            timeout=config.timeout_seconds,
            verify=config.verify,
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self.caller = HttpCaller(self.http, self.name, policy, limiter)
        self.attempts = 0

    def _call(self, method: str, url: str, retry: bool = True, **kw: Any) -> httpx.Response:
        try:
            resp, n = self.caller.call(method, url, retry=retry, **kw)
        except SinkError as exc:
            self.attempts += exc.attempts
            exc.attempts = self.attempts
            raise
        self.attempts += n
        return resp

    def _find(
        self, queue: str, correlation_id: str, kind: RecordType = RecordType.INCIDENT
    ) -> dict[str, Any] | None:
        tid = self.known.get(kind, correlation_id) if self.known else None
        if tid:
            try:
                t = dict(self._call("GET", f"/ticket/{tid}").json())
            except SinkError as exc:
                if exc.status != 404:
                    raise
            else:
                values = {c["name"]: c.get("values", []) for c in t.get("CustomFields", [])}
                if correlation_id in values.get(self.config.correlation_field, []):
                    telemetry.SINK_LOOKUPS.labels(self.name, "known").inc()
                    return {"id": str(t["id"]), "Status": t["Status"]}
        telemetry.SINK_LOOKUPS.labels(self.name, "search").inc()
        return self._search(queue, correlation_id)

    def _search(self, queue: str, correlation_id: str) -> dict[str, Any] | None:
        if "'" in correlation_id or "\\" in correlation_id:
            raise SinkError(
                f"correlation id {correlation_id!r} cannot be quoted in TicketSQL",
                ErrorClass.VALIDATION,
                self.attempts,
                False,
            )
        query = f"Queue='{queue}' AND 'CF.{{{self.config.correlation_field}}}'='{correlation_id}'"
        items = self._call(
            "GET",
            "/tickets",
            params={"query": query, "fields": "Status,Subject", "orderby": "id", "order": "DESC"},
        ).json()["items"]
        return dict(items[0]) if items else None

    def _create(
        self, queue: str, subject: str, content: str, correlation_id: str, ci: str | None
    ) -> dict[str, Any]:
        fields = {self.config.correlation_field: correlation_id}
        if ci:
            fields[self.config.ci_field] = ci
        body = {
            "Queue": queue,
            "Subject": subject,
            "Content": content,
            "ContentType": "text/plain",
            "CustomFields": fields,
        }
        # Not retried blindly: with_lookup_retries searches for the correlation id again first.
        data = self._call("POST", "/ticket", retry=False, json=body).json()
        return {"id": str(data["id"]), "Status": "new"}

    def _set_status(self, ticket: str, status: str) -> None:
        self._call("PUT", f"/ticket/{ticket}", json={"Status": status})

    def _comment(self, ticket: str, text: str) -> None:
        self._call("POST", f"/ticket/{ticket}/comment", json={"Content": text, "ContentType": "text/plain"})

    def _result(
        self,
        cmd: IncidentCommand | ChangeCommand,
        kind: RecordType,
        outcome: SinkOutcome,
        ticket: dict[str, Any] | None,
        message: str,
    ) -> SinkResult:
        tid = str(ticket["id"]) if ticket else None
        return SinkResult(
            command_id=cmd.command_id,
            correlation_id=cmd.correlation_id,
            target=self.name,
            record_type=kind,
            outcome=outcome,
            itsm_id=tid,
            itsm_number=f"RT#{tid}" if tid else None,
            attempts=self.attempts,
            message=message,
            completed_at=datetime.now(UTC),
        )

    def handle_incident(self, cmd: IncidentCommand) -> SinkResult:
        self.attempts = 0
        return with_lookup_retries(self.caller.policy, lambda: self._incident(cmd))

    def handle_change(self, cmd: ChangeCommand) -> SinkResult:
        self.attempts = 0
        return with_lookup_retries(self.caller.policy, lambda: self._change(cmd))

    def _incident(self, cmd: IncidentCommand) -> SinkResult:
        kind, queue = RecordType.INCIDENT, self.config.incident_queue
        ticket = self._find(queue, cmd.correlation_id)
        inactive = ticket is not None and ticket["Status"] in INACTIVE
        if cmd.action is IncidentAction.RESOLVE:
            if ticket is None or inactive:
                return self._result(cmd, kind, SinkOutcome.NOOP, ticket, "nothing open to resolve")
            self._comment(ticket["id"], cmd.resolution_note or "Resolved at the monitoring source.")
            self._set_status(ticket["id"], "resolved")
            return self._result(cmd, kind, SinkOutcome.RESOLVED, ticket, "resolved")
        if ticket is None or (
            inactive and cmd.action is IncidentAction.OPEN and self.resolved_policy == "new"
        ):
            ticket = self._create(
                queue,
                cmd.short_description,
                cmd.description or cmd.short_description,
                cmd.correlation_id,
                cmd.ci_id,
            )
            return self._result(cmd, kind, SinkOutcome.CREATED, ticket, "created")
        if inactive and cmd.action is IncidentAction.OPEN:
            self._set_status(ticket["id"], "open")
            self._comment(ticket["id"], "Reopened: the alert fired again.")
            return self._result(cmd, kind, SinkOutcome.UPDATED, ticket, "reopened")
        self._comment(ticket["id"], cmd.work_note or f"Alert notification again ({cmd.alert_count} so far).")
        return self._result(cmd, kind, SinkOutcome.UPDATED, ticket, "commented")

    def _change(self, cmd: ChangeCommand) -> SinkResult:
        kind, queue = RecordType.CHANGE, self.config.change_queue
        ticket = self._find(queue, cmd.correlation_id, RecordType.CHANGE)
        if ticket is None:
            ticket = self._create(
                queue,
                cmd.short_description,
                cmd.description or cmd.short_description,
                cmd.correlation_id,
                cmd.ci_ids[0] if cmd.ci_ids else None,
            )
            if cmd.action is ChangeAction.CREATE:
                return self._result(cmd, kind, SinkOutcome.CREATED, ticket, "change created")
        elif ticket["Status"] in INACTIVE:
            return self._result(cmd, kind, SinkOutcome.NOOP, ticket, "change already closed")
        if cmd.action is ChangeAction.CREATE:
            return self._result(cmd, kind, SinkOutcome.NOOP, ticket, "change exists already")
        details = [
            f"Commits: {', '.join(cmd.commit_ids)}" if cmd.commit_ids else "",
            f"Build: {cmd.build_number}" if cmd.build_number else "",
            f"Deploy duration: {cmd.deploy_duration_ms / 1000:.0f} s" if cmd.deploy_duration_ms else "",
        ]
        note = "\n".join(x for x in [cmd.description, *details] if x) or "Change updated by the pipeline."
        self._comment(ticket["id"], note)
        if cmd.action is ChangeAction.CLOSE:
            failed = cmd.close_code is CloseCode.UNSUCCESSFUL
            self._set_status(ticket["id"], "rejected" if failed else "resolved")
            return self._result(cmd, kind, SinkOutcome.RESOLVED, ticket, "change closed")
        return self._result(cmd, kind, SinkOutcome.UPDATED, ticket, "change enriched")

    def close(self) -> None:
        self.http.close()
