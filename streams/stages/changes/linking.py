"""DeployLinker: which change does a deployment event belong to, and what does it tell that
change? Pure: the event, the synced changes and the policy decide."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    ChangeAction,
    ChangeCommand,
    CloseCode,
    DeploymentEvent,
    DeployPhase,
)
from streams.stages.changes.gate import ChangeView

FINISHED = {
    DeployPhase.SUCCEEDED: CloseCode.SUCCESSFUL,
    DeployPhase.FAILED: CloseCode.UNSUCCESSFUL,
    DeployPhase.ROLLED_BACK: CloseCode.UNSUCCESSFUL,
}
OUTCOME_ACTION = "deploy.outcome"
UNLINKED_ACTION = "deploy.unlinked"


@dataclass(frozen=True)
class DeployLink:
    """The change a deployment event belongs to (None: unlinked), how it was found, and the effects."""

    change: ChangeView | None
    how: str  # explicit | window | none | not_required
    reason: str
    command: ChangeCommand | None
    audit: AuditEvent | None


def deploy_started(event: DeploymentEvent) -> datetime:
    """When the deployment began: a finished event with a duration began that long before."""
    if event.phase is not DeployPhase.STARTED and event.duration_ms is not None:
        return event.occurred_at - timedelta(milliseconds=event.duration_ms)
    return event.occurred_at


class DeployLinker:
    """Links deployment events to changes and turns them into change enrichment and close commands."""

    def __init__(self, environments_requiring_change: frozenset[str]) -> None:
        self.environments = environments_requiring_change

    def link(self, event: DeploymentEvent, changes: list[ChangeView], now: datetime) -> DeployLink:
        if not event.change_id and event.environment not in self.environments:
            # A change's window covers its service where changes are needed; a staging deploy of
            # the same service is not part of it (unless the pipeline names the change).
            return DeployLink(None, "not_required", f"{event.environment} needs no change", None, None)
        change, how, reason = self._find(event, changes)
        if change is None:
            if event.environment not in self.environments:
                return DeployLink(None, "not_required", reason, None, None)
            return DeployLink(None, how, reason, None, self._audit(event, None, how, reason))
        command = self._command(event, change, now)
        audit = self._audit(event, change, how, reason) if event.phase in FINISHED else None
        return DeployLink(change, how, reason, command, audit)

    def _find(self, event: DeploymentEvent, changes: list[ChangeView]) -> tuple[ChangeView | None, str, str]:
        if event.change_id:
            named = next((c for c in changes if c.named(event.change_id)), None)
            if named is None:
                return (
                    None,
                    "none",
                    f"deployment names change {event.change_id}, which the ITSM does not have",
                )
            return named, "explicit", f"deployment names change {named.change_id}"
        began = deploy_started(event)
        fitting = sorted(
            (
                c
                for c in changes
                if c.approved()
                and c.covers(began)
                and (c.service == event.service or set(c.ci_ids) & set(event.ci_ids))
            ),
            key=lambda c: c.change_id,
        )
        if fitting:
            return fitting[0], "window", f"approved change {fitting[0].change_id} covers {began.isoformat()}"
        return (
            None,
            "none",
            f"no change named and no approved change for {event.service} covers {began.isoformat()}",
        )

    @staticmethod
    def _command(event: DeploymentEvent, change: ChangeView, now: datetime) -> ChangeCommand:
        who = event.pipeline or event.triggered_by or "a pipeline"
        facts = [f"build {event.build_number}" if event.build_number else "", ", ".join(event.commit_ids)]
        what = f"Deployment {event.deployment_id} of {event.service} to {event.environment} by {who}"
        close_code = FINISHED.get(event.phase)
        if event.phase is DeployPhase.STARTED:
            text = f"{what} started"
        elif event.phase is DeployPhase.SUCCEEDED:
            text = f"{what} succeeded"
        elif event.phase is DeployPhase.ROLLED_BACK:
            text = f"{what} was rolled back: {event.failure_reason or 'no reason given'}"
        else:
            text = f"{what} failed: {event.failure_reason or 'no reason given'}"
        if event.duration_ms is not None:
            text += f" after {event.duration_ms / 1000:.1f}s"
        details = "; ".join(f for f in facts if f)
        return ChangeCommand(
            command_id=f"deploy-{event.event_id}",
            correlation_id=change.correlation_id or f"change-{change.change_id}",
            action=ChangeAction.UPDATE if close_code is None else ChangeAction.CLOSE,
            change_type=change.change_type,
            short_description=f"{event.service} deployment {event.deployment_id}",
            description=f"{text} ({details})." if details else f"{text}.",
            service=event.service,
            ci_ids=list(event.ci_ids),
            close_code=close_code,
            commit_ids=list(event.commit_ids),
            build_number=event.build_number,
            deploy_duration_ms=event.duration_ms,
            requested_by=event.triggered_by,
            issued_at=now,
            itsm_ref=change.itsm_id,
        )

    @staticmethod
    def _audit(event: DeploymentEvent, change: ChangeView | None, how: str, reason: str) -> AuditEvent:
        details = {
            "service": event.service,
            "environment": event.environment,
            "deployment_id": event.deployment_id,
            "phase": event.phase.value,
            "pipeline": event.pipeline,
            "change_id": change.change_id if change else "",
            "linked_by": how,
            "duration_ms": "" if event.duration_ms is None else str(event.duration_ms),
            "failure_reason": event.failure_reason or "",
            "build_number": event.build_number or "",
            "commit_ids": ",".join(event.commit_ids),
            "deployed_at": deploy_started(event).isoformat(),
        }
        return AuditEvent(
            event_id=f"deploy-{event.event_id}",
            occurred_at=event.occurred_at,
            actor=event.triggered_by or event.pipeline or "pipeline",
            action=OUTCOME_ACTION if change else UNLINKED_ACTION,
            subject_type="deployment",
            subject_id=f"{event.service}@{event.environment}/{event.deployment_id}",
            outcome=AuditOutcome.DONE if change else AuditOutcome.FLAGGED,
            reason=reason,
            details=details,
        )
