"""Probable cause: an incident that opens where a deployment finished shortly before names it.

When an alert is about to open an incident on a CI, the deployments that finished (succeeded,
failed or rolled back) on that CI, on a CI it depends on (the topology's relationships and
depth) or on its service within correlation.toml's cause.change_lookback before now are looked
up; the latest is the probable cause. The incident's description names it (deployment, change,
commits, build, when), ServiceNow's caused_by gets the change, and audit.events records the link
(`incident.cause`) and later the restore (`incident.restored`), from which `itsmctl changes
report` computes the change failure rate and the time to restore per service.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from streams.core.models import AlertStatus, AuditEvent, AuditOutcome, DeploymentEvent
from streams.core.rules import CorrelationRules, Display
from streams.core.timeutil import localized
from streams.stages.alerts.state import AlertState, AlertWork, IncidentPhase
from streams.stages.base import Ctx
from streams.stages.cmdb import CIIndex

CAUSE_ACTION = "incident.cause"
RESTORED_ACTION = "incident.restored"


class DeploySource(Protocol):
    """Finished deployments (deploy.events), by CI and service."""

    def finished(
        self, ci_ids: list[str], service: str | None, since: datetime, until: datetime
    ) -> list[DeploymentEvent]: ...


class NoDeploys:
    def finished(
        self, ci_ids: list[str], service: str | None, since: datetime, until: datetime
    ) -> list[DeploymentEvent]:
        return []


class CauseStage:
    """Sets work.cause for an alert that may open an incident (not one grouped into another's)."""

    name = "cause"

    def __init__(self, rules: CorrelationRules, cmdb: CIIndex, deploys: DeploySource) -> None:
        self.lookback = timedelta(seconds=rules.cause.change_lookback)
        self.relationships = frozenset(rules.topology.relationships)
        self.depth = rules.topology.max_depth
        self.cmdb = cmdb
        self.deploys = deploys

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork:
        if (
            work.alert.status is not AlertStatus.FIRING
            or work.parent_incident is not None
            or work.state.phase not in (IncidentPhase.NONE, IncidentPhase.RESOLVED)
        ):
            return work
        ci_ids: list[str] = []
        service = work.alert.labels.get("service")
        if work.ci is not None:
            ci_ids = [work.ci.ci_id, *self.cmdb.dependencies(work.ci.ci_id, self.relationships, self.depth)]
            service = work.ci.service or service
        found = self.deploys.finished(ci_ids, service, ctx.now - self.lookback, ctx.now)
        work.cause = max(found, key=lambda d: d.occurred_at) if found else None
        return work


def describe(deploy: DeploymentEvent, opened: datetime, display: Display | None = None) -> str:
    """The description line naming a deployment as the probable cause (its time in the target's
    zone and locale when it has a display, else RFC 3339 in UTC)."""
    minutes = max(0, round((opened - deploy.occurred_at).total_seconds() / 60))
    facts = [f"{deploy.phase.value.lower()}"]
    if deploy.change_id:
        facts.append(f"change {deploy.change_id}")
    if deploy.build_number:
        facts.append(f"build {deploy.build_number}")
    if deploy.commit_ids:
        facts.append(f"commit {', '.join(deploy.commit_ids[:5])}")
    where = ", ".join(deploy.ci_ids) or f"{deploy.service} in {deploy.environment}"
    when = (
        localized(deploy.occurred_at, display.time_zone, display.locale)
        if display
        else deploy.occurred_at.isoformat()
    )
    return (
        f"Probable cause: deployment {deploy.deployment_id} of {deploy.service} ({'; '.join(facts)}) "
        f"finished on {where} at {when}, {minutes} min before this incident."
    )


def cause_event(state: AlertState, incident: str, deploy: DeploymentEvent, now: datetime) -> AuditEvent:
    return AuditEvent(
        event_id=f"cause-{incident}-{deploy.deployment_id}",
        occurred_at=now,
        actor="pipeline",
        action=CAUSE_ACTION,
        subject_type="incident",
        subject_id=incident,
        outcome=AuditOutcome.DONE,
        reason=f"opened {state.ci_id or 'without a CI'} within the change lookback of the deployment",
        details={
            "service": deploy.service,
            "environment": deploy.environment,
            "deployment_id": deploy.deployment_id,
            "change_id": deploy.change_id or "",
            "ci_id": state.ci_id or "",
            "deployed_at": deploy.occurred_at.isoformat(),
            "opened_at": now.isoformat(),
        },
    )


def restored_event(state: AlertState, incident: str, now: datetime) -> AuditEvent | None:
    """When an incident with a probable cause resolves: the restore, for the time to restore."""
    if not state.cause or state.opened_at is None:
        return None
    deployment, _, service = state.cause.partition("@")
    return AuditEvent(
        event_id=f"restored-{incident}-{int(now.timestamp())}",
        occurred_at=now,
        actor="pipeline",
        action=RESTORED_ACTION,
        subject_type="incident",
        subject_id=incident,
        outcome=AuditOutcome.DONE,
        details={
            "service": service,
            "deployment_id": deployment,
            "opened_at": state.opened_at.isoformat(),
            "restored_at": now.isoformat(),
            "seconds": f"{(now - state.opened_at).total_seconds():.0f}",
        },
    )
