"""SeverityStage: source severity and CI criticality/tier to impact, urgency and priority (rule file)."""

from __future__ import annotations

from streams.core.rules import SeverityRules
from streams.stages.alerts.state import AlertWork
from streams.stages.base import Ctx


class SeverityStage:
    """Prices the alert; a higher priority than the incident has marks it escalated."""

    name = "severity"

    def __init__(self, rules: SeverityRules) -> None:
        self.rules = rules

    def __call__(self, work: AlertWork, ctx: Ctx) -> AlertWork:
        alert = work.alert
        work.level = self.rules.level(alert.source.value, alert.severity or "")
        work.urgency = self.rules.urgency[work.level]
        ci = work.ci
        tier = (ci.attributes.get("tier") if ci else None) or alert.labels.get("tier")
        work.impact = self.rules.impact_for(ci.criticality.value if ci else None, tier)
        state = work.state
        if state.impact is not None and state.urgency is not None:
            before = self.rules.priority_for(state.impact, state.urgency)
            work.escalated = self.rules.priority_for(work.impact, work.urgency) < before
        return work
