"""Event rules (ops/rules/events.toml): ordered conditions on source, severity, labels and
annotations, with actions that drop or change the alert before anything else looks at it."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.core import telemetry
from streams.core.matchers import Matcher, matches_all, parse_matchers
from streams.core.models import Alert
from streams.core.rules import EventRule, EventRules

RULE_APPLIED = telemetry.EVENT_RULES


@dataclass
class Verdict:
    """What the rules made of one alert: the alert that goes on (None: dropped), and which rules
    matched, in order, with what each did."""

    alert: Alert | None
    matched: list[tuple[str, str]] = field(default_factory=list)  # (rule, action)
    dropped_by: str | None = None


@dataclass(frozen=True)
class _Compiled:
    rule: EventRule
    labels: tuple[Matcher, ...]
    annotations: tuple[Matcher, ...]

    def holds(self, alert: Alert) -> bool:
        when = self.rule.when
        if when.source and alert.source.value not in when.source:
            return False
        if when.severity and alert.severity.strip().lower() not in when.severity:
            return False
        if not matches_all(self.labels, alert.labels):
            return False
        # Every source's summary and description count as annotations (not only Alertmanager's).
        notes = {"summary": alert.summary, "description": alert.description, **alert.annotations}
        return matches_all(self.annotations, notes)


class EventRuleSet:
    """The rules of one events.toml, compiled once."""

    def __init__(self, rules: EventRules) -> None:
        self.version = rules.version
        self.rules = [
            _Compiled(
                r,
                tuple(m for text in r.when.labels for m in parse_matchers(text)),
                tuple(m for text in r.when.annotations for m in parse_matchers(text)),
            )
            for r in rules.rule
        ]

    def apply(self, alert: Alert, count: bool = True) -> Verdict:
        verdict = Verdict(alert)
        for compiled in self.rules:
            current = verdict.alert
            if current is None or not compiled.holds(current):
                continue
            rule, then = compiled.rule, compiled.rule.then
            if then.drop:
                verdict.alert, verdict.dropped_by = None, rule.name
                verdict.matched.append((rule.name, "dropped"))
                if count:
                    RULE_APPLIED.labels(rule.name, "dropped").inc()
                break
            labels = dict(current.labels)
            for old, new in then.rename_labels.items():
                if old in labels:
                    labels[new] = labels.pop(old)
            labels.update(then.set_labels)
            if then.ci is not None:
                labels["ci_id"] = then.ci
            if then.route is not None:
                labels["route"] = then.route
            update: dict[str, object] = {"labels": labels}
            if then.severity is not None:
                update["severity"] = then.severity
            verdict.alert = current.model_copy(update=update)
            verdict.matched.append((rule.name, "changed"))
            if count:
                RULE_APPLIED.labels(rule.name, "changed").inc()
            if rule.stop:
                break
        return verdict
