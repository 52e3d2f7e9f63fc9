"""CorrelationStage: find the alert's CI by the correlation rules, and an open incident upstream of it."""

from __future__ import annotations

from streams.core import telemetry
from streams.core.rules import CorrelationRules
from streams.stages.alerts.state import AlertWork, CorrelationDecision, IncidentIndex, IncidentPhase
from streams.stages.base import Ctx
from streams.stages.cmdb import CIIndex


def index_entry(incident: str, targets: list[str] | tuple[str, ...]) -> str:
    """alerts.ci.incidents' value: the incident's correlation id, and `@` with its sinks when it
    was routed to some only (correlation ids never hold an `@`)."""
    return f"{incident}@{','.join(targets)}" if targets else incident


def parse_entry(entry: str) -> tuple[str, tuple[str, ...]]:
    """index_entry's value back to (correlation id, sinks); a value without `@` (every sink)
    is what workers before routing wrote."""
    incident, _, targets = entry.partition("@")
    return incident, tuple(t for t in targets.split(",") if t)


class CorrelationStage:
    """First matching rule wins; then topology: a dependency's open incident adopts the alert."""

    name = "correlation"

    def __init__(self, rules: CorrelationRules, cmdb: CIIndex, incidents: IncidentIndex) -> None:
        self.rules = rules
        self.cmdb = cmdb
        self.incidents = incidents
        self.relationships = frozenset(rules.topology.relationships)

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork:
        labels = work.alert.labels
        for rule in self.rules.rules:
            for label in rule.labels:
                value = labels.get(label)
                if not value:
                    continue
                ci = self.cmdb.lookup(rule.kind, value)
                if ci is not None:
                    work.ci, work.ci_rule = ci, rule.name
                    break
            if work.ci is not None:
                break
        decision = "matched"
        if work.ci is None:
            decision = "unknown"
            telemetry.ALERTS_UNKNOWN_CI.labels(work.alert.source.value.lower()).inc()
        else:
            work.state.ci_id = work.ci.ci_id
            # Only an alert without an incident of its own can be adopted by an upstream one.
            if work.state.phase in (IncidentPhase.NONE, IncidentPhase.RESOLVED, IncidentPhase.GROUPED):
                for upstream in self.cmdb.dependencies(
                    work.ci.ci_id, self.relationships, self.rules.topology.max_depth
                ):
                    entry = self.incidents.get(upstream)
                    if entry is not None:
                        incident, targets = parse_entry(entry)
                        work.parent_incident, work.parent_ci = incident, upstream
                        work.parent_targets = targets
                        decision = "grouped"
                        break
            if (
                work.parent_incident is None
                and self.rules.topology.late_parent != "none"
                and work.state.phase in (IncidentPhase.NONE, IncidentPhase.RESOLVED)
            ):
                below = self.cmdb.dependents(work.ci.ci_id, self.relationships, self.rules.topology.max_depth)
                work.dependents = [
                    (ci, entry) for ci in sorted(below) for entry in self.incidents.entries(ci)
                ]
        telemetry.CORRELATIONS.labels(work.ci_rule, decision).inc()
        work.effects.decisions.append(
            CorrelationDecision(
                work.alert.fingerprint,
                work.ci_rule,
                decision,
                work.ci.ci_id if work.ci else None,
                work.parent_incident,
                dict(work.alert.labels),
            )
        )
        return work
