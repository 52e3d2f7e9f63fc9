"""ChangeGate: may this deployment go ahead now? A pure decision with reasons, over narrow views.

Rules, in order (README: change gate): an environment that needs no change is allowed; a freeze
window covering the service, a CI or the environment denies; the deploy needs an approved change
(the one named, or else one for the service) whose window covers this moment; another approved
change implementing on a shared CI at the same moment is a conflict. An emergency bypass, by an
allowed caller with a justification, overrides freeze, missing change and conflict, and asks for
an emergency change record after the fact. Every decision is an AuditEvent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    ChangeAction,
    ChangeCommand,
    ChangeRecord,
    ChangeType,
    ConfigurationItem,
    WindowKind,
)
from streams.stages.cmdb import CIIndex
from streams.stages.windows import WindowCalendar

APPROVED_STATES = frozenset({"approved", "scheduled", "implement"})
GATE_NAMESPACE = uuid.UUID("0f6b8f2e-9d2c-4a57-8c1e-1b5f3f0c9a21")


class ChangeState(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    IMPLEMENT = "implement"
    REVIEW = "review"
    CLOSED = "closed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ChangeView:
    """What the gate needs to know of one change request."""

    change_id: str
    change_type: ChangeType
    state: ChangeState
    service: str | None
    ci_ids: tuple[str, ...]
    planned_start: datetime | None
    planned_end: datetime | None
    itsm_id: str | None = None
    correlation_id: str | None = None

    @classmethod
    def from_record(cls, rec: ChangeRecord) -> ChangeView:
        """The gate's view of a change as synced from the ITSM."""
        return cls(
            rec.change_id,
            rec.change_type,
            ChangeState(rec.status.value.lower()),
            rec.service,
            tuple(rec.ci_ids),
            rec.planned_start,
            rec.planned_end,
            rec.itsm_id,
            rec.correlation_id,
        )

    def named(self, ref: str) -> bool:
        """Whether a pipeline naming the change as ref means this one (number or correlation id)."""
        return ref in (self.change_id, self.correlation_id)

    def approved(self) -> bool:
        # A standard change is pre-approved by definition, unless it was withdrawn or is done.
        if self.change_type is ChangeType.STANDARD:
            return self.state not in (ChangeState.CLOSED, ChangeState.CANCELLED)
        return self.state.value in APPROVED_STATES

    def covers(self, now: datetime) -> bool:
        return (
            self.planned_start is not None
            and self.planned_end is not None
            and self.planned_start <= now < self.planned_end
        )


@dataclass(frozen=True)
class GateRequest:
    """A pipeline asking whether it may deploy."""

    service: str
    environment: str
    caller: str
    change_id: str | None = None
    commit: str | None = None
    ci_ids: tuple[str, ...] = ()
    bypass: bool = False
    justification: str = ""


@dataclass(frozen=True)
class GatePolicy:
    """Which environments need a change, and who may bypass the gate in an emergency."""

    environments_requiring_change: frozenset[str] = frozenset({"production"})
    bypass_callers: frozenset[str] = frozenset()


@dataclass
class GateDecision:
    allowed: bool
    reasons: list[str]
    change_id: str | None = None
    emergency: bool = False
    audit: AuditEvent | None = None
    emergency_change: ChangeCommand | None = None
    denials: list[str] = field(default_factory=list)


class ChangeGate:
    """Pure: the same request, views and moment always give the same decision."""

    def __init__(self, policy: GatePolicy, calendar: WindowCalendar, cmdb: CIIndex) -> None:
        self.policy = policy
        self.calendar = calendar
        self.cmdb = cmdb

    def decide(self, req: GateRequest, changes: list[ChangeView], now: datetime) -> GateDecision:
        reasons: list[str] = []
        denials: list[str] = []
        change: ChangeView | None = None
        if req.environment not in self.policy.environments_requiring_change:
            reasons.append(f"environment {req.environment!r} needs no change")
            return self._finish(req, now, True, reasons, denials, None)
        cis: list[ConfigurationItem | None] = [
            ci for ci in (self.cmdb.get(c) for c in req.ci_ids) if ci is not None
        ]
        for ci in cis or [None]:
            frozen = self.calendar.covering(WindowKind.FREEZE, ci, req.service, req.environment, now)
            if frozen is not None:
                window, end = frozen
                denials.append(
                    f"freeze window {window.window_id} ({window.reason or 'no reason given'}) "
                    f"is active until {end.isoformat()}"
                )
                break
        if req.change_id:
            change = next((c for c in changes if c.named(req.change_id)), None)
            if change is None:
                denials.append(f"change {req.change_id} is unknown")
            elif not change.approved():
                denials.append(f"change {change.change_id} is not approved (state {change.state.value})")
            elif not change.covers(now):
                denials.append(
                    f"change {change.change_id} does not cover {now.isoformat()} (window {_window(change)})"
                )
            elif not self._about(change, req):
                denials.append(
                    f"change {change.change_id} is for {change.service or 'other CIs'}, not {req.service}"
                )
            else:
                reasons.append(f"approved change {change.change_id} covers {req.service} now")
        else:
            fitting = sorted(
                (c for c in changes if c.approved() and c.covers(now) and self._about(c, req)),
                key=lambda c: c.change_id,
            )
            if fitting:
                change = fitting[0]
                reasons.append(f"approved change {change.change_id} covers {req.service} now")
            else:
                denials.append(
                    f"no approved change covers {req.service} in {req.environment} at {now.isoformat()}"
                )
        own = set(req.ci_ids) | set(change.ci_ids if change else ())
        for other in sorted(changes, key=lambda c: c.change_id):
            if change is not None and other.change_id == change.change_id:
                continue
            shared = own & set(other.ci_ids)
            if shared and other.approved() and other.covers(now) and other.state is ChangeState.IMPLEMENT:
                denials.append(
                    f"conflicts with change {other.change_id} implementing on {', '.join(sorted(shared))}"
                )
        if not denials:
            return self._finish(req, now, True, reasons, denials, change)
        if req.bypass:
            if req.caller not in self.policy.bypass_callers:
                denials.append(f"{req.caller} may not bypass the gate")
            elif not req.justification.strip():
                denials.append("an emergency bypass needs a justification")
            else:
                reasons.append(f"emergency bypass by {req.caller}: {req.justification.strip()}")
                reasons.extend(f"bypassed: {d}" for d in denials)
                return self._finish(req, now, True, reasons, denials, change, emergency=True)
        return self._finish(req, now, False, reasons + denials, denials, change)

    @staticmethod
    def _about(change: ChangeView, req: GateRequest) -> bool:
        return change.service == req.service or bool(set(change.ci_ids) & set(req.ci_ids))

    def _finish(
        self,
        req: GateRequest,
        now: datetime,
        allowed: bool,
        reasons: list[str],
        denials: list[str],
        change: ChangeView | None,
        emergency: bool = False,
    ) -> GateDecision:
        identity = (
            f"{req.service}|{req.environment}|{req.caller}|{req.change_id}|{req.commit}|{now.isoformat()}"
        )
        outcome = (
            AuditOutcome.BYPASSED if emergency else (AuditOutcome.ALLOWED if allowed else AuditOutcome.DENIED)
        )
        audit = AuditEvent(
            event_id=f"gate-{uuid.uuid5(GATE_NAMESPACE, identity)}",
            occurred_at=now,
            actor=req.caller,
            action="gate.bypass" if emergency else "gate.check",
            subject_type="deployment",
            subject_id=f"{req.service}@{req.environment}",
            outcome=outcome,
            reason="; ".join(reasons),
            details={
                "service": req.service,
                "environment": req.environment,
                "change_id": change.change_id if change else "",
                "commit": req.commit or "",
                "ci_ids": ",".join(req.ci_ids),
            },
        )
        emergency_change = None
        if emergency:
            emergency_change = ChangeCommand(
                command_id=f"emergency-{uuid.uuid5(GATE_NAMESPACE, identity)}",
                correlation_id=f"emergency-{uuid.uuid5(GATE_NAMESPACE, identity).hex[:12]}",
                action=ChangeAction.CREATE,
                change_type=ChangeType.EMERGENCY,
                short_description=f"Emergency deployment of {req.service} to {req.environment}",
                description="Recorded after the fact: the change gate was bypassed.\n" + "\n".join(reasons),
                service=req.service,
                ci_ids=list(req.ci_ids),
                planned_start=now,
                commit_ids=[req.commit] if req.commit else [],
                justification=req.justification.strip(),
                requested_by=req.caller,
                issued_at=now,
            )
        return GateDecision(
            allowed,
            reasons,
            change.change_id if change else None,
            emergency,
            audit,
            emergency_change,
            denials,
        )


def _window(change: ChangeView) -> str:
    start = change.planned_start.isoformat() if change.planned_start else "?"
    end = change.planned_end.isoformat() if change.planned_end else "?"
    return f"{start} .. {end}"
