"""RTSink: tickets in configurable queues, found again by a correlation-id custom field."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.sinks.base import LookupSink
from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.known import KnownIds
from connectors.sinks.ratelimit import RateLimiter
from connectors.sinks.rt import mapping
from connectors.sinks.rt.client import RTClient
from connectors.sinks.rt.config import RTConfig
from streams.core import telemetry
from streams.core.dlq import ErrorClass
from streams.core.models import (
    ChangeAction,
    ChangeCommand,
    IncidentAction,
    IncidentCommand,
    RecordType,
    SinkOutcome,
    SinkResult,
)


class RTSink(LookupSink):
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
        self.client = RTClient(config, policy, limiter, transport, self.name)
        self.caller = self.client.caller

    def _find(self, queue: str | None, correlation_id: str, kind: RecordType) -> dict[str, Any] | None:
        tid = self.known.get(kind, correlation_id) if self.known else None
        if tid:
            t = self.client.ticket(tid)
            values = {c["name"]: c.get("values", []) for c in (t or {}).get("CustomFields", [])}
            if t is not None and correlation_id in values.get(self.config.correlation_field, []):
                telemetry.SINK_LOOKUPS.labels(self.name, "known").inc()
                return {"id": str(t["id"]), "Status": t["Status"]}
        telemetry.SINK_LOOKUPS.labels(self.name, "search").inc()
        try:
            query = mapping.ticket_query(queue, self.config.correlation_field, correlation_id)
        except ValueError as exc:
            raise SinkError(str(exc), ErrorClass.VALIDATION, self.caller.attempts, False) from exc
        items = self.client.search(query)
        return dict(items[0]) if items else None

    def _create(self, queue: str, cmd: IncidentCommand | ChangeCommand) -> dict[str, Any]:
        body = mapping.ticket_body(queue, cmd, self.config.correlation_field, self.config.ci_field)
        return {"id": self.client.create(body), "Status": "new"}

    def _result(
        self,
        cmd: IncidentCommand | ChangeCommand,
        kind: RecordType,
        outcome: SinkOutcome,
        ticket: dict[str, Any] | None,
        message: str,
    ) -> SinkResult:
        tid = str(ticket["id"]) if ticket else None
        return self.result(cmd, kind, outcome, tid, f"RT#{tid}" if tid else None, message)

    def _incident(self, cmd: IncidentCommand) -> SinkResult:
        kind = RecordType.INCIDENT
        # A route may name another queue (routes.toml); later commands of the incident (and
        # related alerts grouped into it) carry no queue, so it is found in any queue the sink
        # may see: correlation ids are unique.
        queue = cmd.target_fields.get("rt", {}).get("queue") or self.config.incident_queue
        ticket = self._find(None, cmd.correlation_id, kind)
        inactive = ticket is not None and ticket["Status"] in mapping.INACTIVE
        if cmd.action is IncidentAction.RESOLVE:
            if ticket is None or inactive:
                return self._result(cmd, kind, SinkOutcome.NOOP, ticket, "nothing open to resolve")
            self.client.comment(ticket["id"], cmd.resolution_note or "Resolved at the monitoring source.")
            self.client.set_status(ticket["id"], "resolved")
            return self._result(cmd, kind, SinkOutcome.RESOLVED, ticket, "resolved")
        if ticket is None or (
            inactive and cmd.action is IncidentAction.OPEN and self.resolved_policy == "new"
        ):
            return self._result(cmd, kind, SinkOutcome.CREATED, self._create(queue, cmd), "created")
        if inactive and cmd.action is IncidentAction.OPEN:
            self.client.set_status(ticket["id"], "open")
            self.client.comment(ticket["id"], cmd.work_note or "Reopened: the alert fired again.")
            return self._result(cmd, kind, SinkOutcome.UPDATED, ticket, "reopened")
        self.client.comment(
            ticket["id"], cmd.work_note or f"Alert notification again ({cmd.alert_count} so far)."
        )
        if cmd.acknowledged and ticket["Status"] == "new":
            # An acknowledgement starts the work: RT's "open" (never from a status a person set).
            self.client.set_status(ticket["id"], "open")
            return self._result(cmd, kind, SinkOutcome.UPDATED, ticket, "acknowledged: open")
        return self._result(cmd, kind, SinkOutcome.UPDATED, ticket, "commented")

    def _change(self, cmd: ChangeCommand) -> SinkResult:
        kind, queue = RecordType.CHANGE, self.config.change_queue
        if cmd.itsm_ref:
            found = self.client.ticket(cmd.itsm_ref)
            if found is None:
                raise self.missing_ref(cmd)
            ticket: dict[str, Any] | None = {"id": str(found["id"]), "Status": found["Status"]}
        else:
            ticket = self._find(queue, cmd.correlation_id, kind)
        if ticket is None:
            ticket = self._create(queue, cmd)
            if cmd.action is ChangeAction.CREATE:
                return self._result(cmd, kind, SinkOutcome.CREATED, ticket, "change created")
        elif ticket["Status"] in mapping.INACTIVE:
            return self._result(cmd, kind, SinkOutcome.NOOP, ticket, "change already closed")
        if cmd.action is ChangeAction.CREATE:
            return self._result(cmd, kind, SinkOutcome.NOOP, ticket, "change exists already")
        self.client.comment(ticket["id"], mapping.change_note(cmd))
        if cmd.action is ChangeAction.CLOSE:
            self.client.set_status(ticket["id"], mapping.close_status(cmd))
            return self._result(cmd, kind, SinkOutcome.RESOLVED, ticket, "change closed")
        return self._result(cmd, kind, SinkOutcome.UPDATED, ticket, "change enriched")

    def close(self) -> None:
        self.client.close()
