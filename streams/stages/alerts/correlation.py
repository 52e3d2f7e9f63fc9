"""CorrelationStage: find the alert's CI by the correlation rules, and an open incident upstream of it."""

from __future__ import annotations

import functools
from datetime import datetime

from streams.core import telemetry
from streams.core.rules import CorrelationRules
from streams.stages.alerts.state import AlertWork, CorrelationDecision, IncidentIndex, IncidentPhase
from streams.stages.base import Ctx
from streams.stages.cmdb import CIIndex


def index_entry(incident: str, targets: list[str] | tuple[str, ...], opened: datetime | None = None) -> str:
    """alerts.ci.incidents' value: the incident's correlation id, `@` with its sinks when it was
    routed to some only, and `#` with when it opened (POSIX seconds) for a group's incident
    (correlation ids never hold an `@` or `#`)."""
    entry = f"{incident}@{','.join(targets)}" if targets else incident
    return f"{entry}#{opened.timestamp():.0f}" if opened is not None else entry


def parse_entry(entry: str) -> tuple[str, tuple[str, ...]]:
    """index_entry's value back to (correlation id, sinks); a value without `@` (every sink)
    is what workers before routing wrote."""
    incident, _, targets = entry.partition("#")[0].partition("@")
    return incident, tuple(t for t in targets.split(",") if t)


def entry_opened(entry: str) -> float | None:
    """When a group's incident opened (POSIX seconds), if its entry says."""
    stamp = entry.partition("#")[2]
    return float(stamp) if stamp else None


def group_key(group_by: list[str], labels: dict[str, str]) -> str | None:
    """The pseudo CI id of an alert's group in alerts.ci.incidents (None: no grouping)."""
    if not group_by:
        return None
    return "group:" + ",".join(f"{name}={labels.get(name, '')}" for name in group_by)


def members_key(group: str) -> str:
    """Where a group's members (other than the alert that opened it) are indexed while firing."""
    return f"{group}/members"


class CorrelationStage:
    """First matching rule wins; then topology: a dependency's open incident adopts the alert."""

    name = "correlation"

    def __init__(self, rules: CorrelationRules, cmdb: CIIndex, incidents: IncidentIndex) -> None:
        self.rules = rules
        self.cmdb = cmdb
        self.incidents = incidents
        self.relationships = frozenset(rules.topology.relationships)

    def open_below(self, ci_id: str) -> list[tuple[str, str]]:
        """The open incidents of the CIs that depend on ci_id, as (ci id, index entry)."""
        depth = self.rules.topology.max_depth
        below = sorted(self.cmdb.dependents(ci_id, self.relationships, depth))
        return [(ci, entry) for ci in below for entry in self.incidents.entries(ci)]

    def _group(self, work: AlertWork, ctx: Ctx) -> bool:
        """group_by: an alert without an incident of its own joins its group's incident if that
        opened within group_window (else it may open the group's next one); True if it joined."""
        grouping = self.rules.grouping
        key = group_key(grouping.group_by, work.alert.labels)
        if key is None or work.state.phase not in (
            IncidentPhase.NONE,
            IncidentPhase.RESOLVED,
            IncidentPhase.GROUPED,
        ):
            return False
        work.group = key
        for entry in self.incidents.entries(key):
            incident, targets = parse_entry(entry)
            opened = entry_opened(entry)
            if opened is not None and ctx.now.timestamp() - opened > grouping.group_window:
                continue  # too late to join this one
            work.parent_incident, work.parent_ci, work.parent_targets = incident, None, targets
            return True
        return False

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
            telemetry.labelled(telemetry.ALERTS_UNKNOWN_CI, work.alert.source.value.lower()).inc()
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
        if work.parent_incident is None and self._group(work, ctx):
            decision = "grouped"
        if (
            work.ci is not None
            and work.parent_incident is None
            and self.rules.topology.late_parent != "none"
            and work.state.phase in (IncidentPhase.NONE, IncidentPhase.RESOLVED)
        ):
            # Looked up only if the alert opens an incident (not for each suppressed or held one).
            work.dependents = functools.partial(self.open_below, work.ci.ci_id)
        telemetry.labelled(telemetry.CORRELATIONS, work.ci_rule, decision).inc()
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
