"""JiraSink: customer requests created once (found again by label), commented, resolved and reopened."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.sinks.base import LookupSink
from connectors.sinks.http import RetryPolicy, SinkError
from connectors.sinks.jira import mapping
from connectors.sinks.jira.client import JiraClient
from connectors.sinks.jira.config import JiraConfig
from connectors.sinks.known import KnownIds
from connectors.sinks.ratelimit import RateLimiter
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

RECENT = 10_000  # creates remembered by key, beside the known ids from itsm.results
DONE = {"resolved", "done", "closed", "canceled", "cancelled"}


class JiraSink(LookupSink):
    name = "jira"

    def __init__(
        self,
        config: JiraConfig,
        policy: RetryPolicy,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        resolved_policy: str = "reopen",
        known: KnownIds | None = None,
    ) -> None:
        self.config = config
        self.resolved_policy = resolved_policy
        self.known = known
        self.client = JiraClient(config, policy, limiter, transport, self.name)
        self.caller = self.client.caller
        # correlation id -> when a create of it ended without an answer (monotonic seconds)
        self.uncertain: dict[str, float] = {}
        # Set by the sink runner: records a create durably before it is sent (see SinkRunner._intent).
        self.intent: Callable[[IncidentCommand | ChangeCommand], None] | None = None
        # correlation id -> issue key of this process's latest creates
        self.recent: OrderedDict[str, str] = OrderedDict()

    def _find(self, correlation_id: str, kind: RecordType = RecordType.INCIDENT) -> dict[str, Any] | None:
        label = mapping.correlation_label(correlation_id)
        key = self.known.get(kind, correlation_id) if self.known is not None else None
        key = key or self.recent.get(correlation_id)
        if key:
            issue = self.client.issue(key)
            if issue is not None and label in issue["fields"].get("labels", []):
                telemetry.SINK_LOOKUPS.labels(self.name, "known").inc()
                return issue
        telemetry.SINK_LOOKUPS.labels(self.name, "search").inc()
        issues = self.client.search_label(label)
        return dict(issues[0]) if issues else None

    def _create(self, cmd: IncidentCommand | ChangeCommand, request_type: str) -> dict[str, Any]:
        """Create the request once. A create whose answer was lost (a timeout, a 5xx) may have taken
        effect, and Jira Cloud's search may not show it for a while: until search_lag_seconds have
        passed since that attempt, the lookup is retried (by with_lookup_retries) instead of the
        create, so a lagging index never makes a second request."""
        corr = cmd.correlation_id
        kind = RecordType.INCIDENT if isinstance(cmd, IncidentCommand) else RecordType.CHANGE
        waits = []
        if corr in self.uncertain:
            waits.append(time.monotonic() - self.uncertain[corr])
        sent = self.known.pending_since(kind, corr) if self.known is not None else None
        if sent is not None:  # sent by a process that did not live to see the answer, maybe this one
            waits.append((datetime.now(UTC) - sent).total_seconds())
        if waits:
            waited = min(waits)
            if waited < self.config.search_lag_seconds:
                telemetry.SINK_LOOKUPS.labels(self.name, "awaiting_index").inc()
                raise SinkError(
                    f"the create of {corr} may have succeeded ({waited:.0f}s ago) and Jira's search "
                    f"does not show it yet; looking again before creating "
                    f"(up to {self.config.search_lag_seconds:.0f}s)",
                    ErrorClass.NETWORK,
                    self.caller.attempts,
                    True,
                )
        if self.intent is not None:
            self.intent(cmd)
        try:
            routed = cmd.target_fields.get("jira", {}) if isinstance(cmd, IncidentCommand) else {}
            issue = self.client.create_request(
                routed.get("request_type") or request_type,
                mapping.request_fields(cmd),
                routed.get("service_desk"),
            )
        except SinkError as exc:
            if exc.retryable:
                self.uncertain[corr] = time.monotonic()  # it may have been created: do not repeat blindly
            raise
        self.uncertain.pop(corr, None)
        # Read back by key (consistent), not by a search that may lag behind this create.
        self.recent[corr] = issue["key"]
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        return issue

    def _comment(self, key: str, text: str) -> None:
        self.client.comment(key, text)

    def _transition(self, key: str, name: str, comment: str) -> None:
        values = self.client.transitions(key)
        match = [t for t in values if t["name"].lower() == name.lower()]
        if not match:
            available = ", ".join(t["name"] for t in values) or "none"
            raise SinkError(
                f"{key} has no transition {name!r} (available: {available})",
                ErrorClass.CONFLICT,
                self.caller.attempts,
                False,
            )
        self.client.transition(key, match[0]["id"], comment)

    def _result(
        self,
        cmd: IncidentCommand | ChangeCommand,
        kind: RecordType,
        outcome: SinkOutcome,
        issue: dict[str, Any] | None,
        message: str,
    ) -> SinkResult:
        return self.result(
            cmd, kind, outcome, issue["id"] if issue else None, issue["key"] if issue else None, message
        )

    def _incident(self, cmd: IncidentCommand) -> SinkResult:
        kind, issue = RecordType.INCIDENT, self._find(cmd.correlation_id)
        done = issue is not None and issue["fields"]["status"]["name"].lower() in DONE
        if cmd.action is IncidentAction.RESOLVE:
            if issue is None or done:
                return self._result(cmd, kind, SinkOutcome.NOOP, issue, "nothing open to resolve")
            self._transition(issue["key"], self.config.resolve_transition, cmd.resolution_note or "Resolved.")
            return self._result(cmd, kind, SinkOutcome.RESOLVED, issue, "resolved")
        if issue is None or (done and cmd.action is IncidentAction.OPEN and self.resolved_policy == "new"):
            issue = self._create(cmd, self.config.incident_request_type_id)
            return self._result(cmd, kind, SinkOutcome.CREATED, issue, "created")
        if done and cmd.action is IncidentAction.OPEN:
            note = cmd.work_note or "Reopened: the alert fired again."
            self._transition(issue["key"], self.config.reopen_transition, note)
            return self._result(cmd, kind, SinkOutcome.UPDATED, issue, "reopened")
        self._comment(issue["key"], cmd.work_note or f"Alert notification again ({cmd.alert_count} so far).")
        return self._result(cmd, kind, SinkOutcome.UPDATED, issue, "commented")

    def _change(self, cmd: ChangeCommand) -> SinkResult:
        kind = RecordType.CHANGE
        if cmd.itsm_ref:
            issue = self.client.issue(cmd.itsm_ref)
            if issue is None:
                raise self.missing_ref(cmd)
        else:
            issue = self._find(cmd.correlation_id, RecordType.CHANGE)
        if issue is None:
            issue = self._create(cmd, self.config.change_request_type_id)
            if cmd.action is ChangeAction.CREATE:
                return self._result(cmd, kind, SinkOutcome.CREATED, issue, "change created")
        elif issue["fields"]["status"]["name"].lower() in DONE:
            return self._result(cmd, kind, SinkOutcome.NOOP, issue, "change already closed")
        if cmd.action is ChangeAction.CREATE:
            return self._result(cmd, kind, SinkOutcome.NOOP, issue, "change exists already")
        if cmd.action is ChangeAction.CLOSE:
            self._transition(issue["key"], self.config.resolve_transition, mapping.change_comment(cmd))
            return self._result(cmd, kind, SinkOutcome.RESOLVED, issue, "change closed")
        self._comment(issue["key"], mapping.change_comment(cmd))
        return self._result(cmd, kind, SinkOutcome.UPDATED, issue, "change enriched")

    def close(self) -> None:
        self.client.close()
