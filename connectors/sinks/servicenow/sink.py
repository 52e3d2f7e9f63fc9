"""ServiceNowSink: applies IncidentCommands to the incident table idempotently via correlation_id."""

from __future__ import annotations

from typing import Any

from connectors.identities import IdentitiesFile
from connectors.sinks.base import LookupSink
from connectors.sinks.known import KnownIds
from connectors.sinks.servicenow import mapping as m
from connectors.sinks.servicenow.client import ServiceNowClient
from connectors.sinks.servicenow.references import ReferenceBinder, references, with_unbound
from streams.core.models import (
    ChangeAction,
    ChangeCommand,
    IncidentAction,
    IncidentCommand,
    RecordType,
    SinkOutcome,
    SinkResult,
)


class ServiceNowSink(LookupSink):
    """Open creates unless an active record with the correlation id exists; resolve is idempotent."""

    name = "servicenow"

    def __init__(
        self,
        client: ServiceNowClient,
        resolved_policy: str = "reopen",
        known: KnownIds | None = None,
        identities: IdentitiesFile | None = None,
    ) -> None:
        self.client = client
        self.caller = client.caller
        self.resolved_policy = resolved_policy
        self.known = known
        config = client.config
        self.caller_user = config.caller or config.user
        self.binder = ReferenceBinder(
            client.rows,
            references(config.ci_lookup_field),
            config.reference_ttl_seconds,
            config.reference_miss_ttl_seconds,
            identities=identities,
            integration_user=config.user,
        )

    def _bound(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Reference fields as sys_ids; names without a record stay in the description."""
        return with_unbound(*self.binder.bind(fields))

    def handle(self, cmd: IncidentCommand) -> SinkResult:
        return self.handle_incident(cmd)

    def _known(self, kind: RecordType, cmd: IncidentCommand | ChangeCommand) -> str | None:
        return self.known.get(kind, cmd.correlation_id) if self.known else None

    def _change(self, cmd: ChangeCommand) -> SinkResult:
        def result(outcome: SinkOutcome, rec: dict[str, str] | None, message: str) -> SinkResult:
            return self._result(cmd, outcome, rec, message, RecordType.CHANGE)

        if cmd.itsm_ref:
            # A change the pipeline did not create (no correlation id): addressed by its sys_id.
            existing = self.client.get(m.CHANGE_TABLE, cmd.itsm_ref)
            if existing is None:
                raise self.missing_ref(cmd)
        else:
            existing = self.client.find(
                m.CHANGE_TABLE, cmd.correlation_id, self._known(RecordType.CHANGE, cmd)
            )
        if existing is None:
            rec = self.client.create(m.CHANGE_TABLE, self._bound(m.change_create_fields(cmd)))
            if cmd.action is ChangeAction.CREATE:
                return result(SinkOutcome.CREATED, rec, "change created")
            existing = rec  # enrichment or close of a change never created: create it, then apply
        elif existing["state"] in m.CHANGE_INACTIVE_STATES:
            return result(
                SinkOutcome.NOOP,
                existing,
                f"change {existing['number']} is already closed (state {existing['state']})",
            )
        if cmd.action is ChangeAction.CREATE:
            return result(SinkOutcome.NOOP, existing, "change exists already")
        if cmd.action is ChangeAction.CLOSE:
            rec = self.client.update(m.CHANGE_TABLE, existing["sys_id"], m.change_close_fields(cmd))
            return result(SinkOutcome.RESOLVED, rec, f"closed {rec.get('close_code')}")
        rec = self.client.update(m.CHANGE_TABLE, existing["sys_id"], m.change_update_fields(cmd))
        return result(SinkOutcome.UPDATED, rec, "change enriched")

    def _incident(self, cmd: IncidentCommand) -> SinkResult:
        existing = self.client.find(
            m.INCIDENT_TABLE, cmd.correlation_id, self._known(RecordType.INCIDENT, cmd)
        )
        if cmd.action is IncidentAction.RESOLVE:
            if existing is None or existing["state"] in m.INACTIVE_STATES:
                why = (
                    "no incident with this correlation id"
                    if existing is None
                    else f"incident {existing['number']} is already inactive (state {existing['state']})"
                )
                return self._result(cmd, SinkOutcome.NOOP, existing, why)
            rec = self.client.update(m.INCIDENT_TABLE, existing["sys_id"], m.resolve_fields(cmd))
            return self._result(cmd, SinkOutcome.RESOLVED, rec, "resolved")
        new_on_resolved = self.resolved_policy == "new" and cmd.action is IncidentAction.OPEN
        if (
            existing is None
            or existing["state"] in (m.STATE_CLOSED, m.STATE_CANCELED)
            or (new_on_resolved and existing["state"] == m.STATE_RESOLVED)
        ):
            # A closed incident is history: a new occurrence gets a new incident (and a resolved
            # one too, when the declared policy says "new").
            rec = self.client.create(m.INCIDENT_TABLE, self._bound(m.open_fields(cmd, self.caller_user)))
            return self._result(cmd, SinkOutcome.CREATED, rec, "created")
        # Only an OPEN reopens a resolved incident; an UPDATE (a related alert, say) just notes it.
        reopen = existing["state"] == m.STATE_RESOLVED and cmd.action is IncidentAction.OPEN
        # An acknowledgement starts the work on a New incident (never overrides a state a person set).
        start = cmd.acknowledged and existing["state"] == m.STATE_NEW
        rec = self.client.update(m.INCIDENT_TABLE, existing["sys_id"], m.update_fields(cmd, reopen, start))
        message = "reopened" if reopen else "acknowledged: in progress" if start else "updated"
        return self._result(cmd, SinkOutcome.UPDATED, rec, message)

    def _result(
        self,
        cmd: IncidentCommand | ChangeCommand,
        outcome: SinkOutcome,
        rec: dict[str, str] | None,
        message: str,
        record_type: RecordType = RecordType.INCIDENT,
    ) -> SinkResult:
        return self.result(
            cmd,
            record_type,
            outcome,
            rec.get("sys_id") if rec else None,
            rec.get("number") if rec else None,
            message,
        )
