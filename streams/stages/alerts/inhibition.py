"""Inhibition (ops/rules/inhibit.toml), with Alertmanager's semantics: while a source alert fires,
the target alerts whose `equal` labels carry its values stay quiet.

A firing source becomes an INHIBITION window on maintenance.windows (GLOBAL scope; matchers = the
rule's target matchers and one `label="value"` per equal label; except_matchers = the rule's
source matchers when the source also matches the target side, Alertmanager's two-sided
exclusion). Every worker sees the window, whatever partition a target is on, and the window
machinery does the rest: a target it covers is recorded in alerts.suppressed with the reason and
counted as inhibited, and when the window goes (the source resolved, or sent nothing for the
window's lifetime) the targets still firing come due and open.

Alertmanager's inhibitor (inhibit/inhibit.go, Mutes and hasEqual) is the reference for what
inhibits what: `equal` compares label values with an absent label as the empty string, a
resolved source inhibits nothing, and a target that matches the source side is not inhibited by
a source that matches both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from streams.core.matchers import Matcher, MatchType, matches_all
from streams.core.models import AlertStatus, LabelMatcher, MaintenanceWindow, WindowKind, WindowScope
from streams.core.rules import InhibitRule, InhibitRules
from streams.stages.alerts.state import AlertState

PREFIX = "inhibit:"


def _label_matchers(matchers: list[Matcher]) -> list[LabelMatcher]:
    return [LabelMatcher(name=m.name, type=m.type, value=m.value) for m in matchers]


def equal(name: str, value: str) -> LabelMatcher:
    """`name="value"`: an equal label of the source (an absent label is the empty string)."""
    return LabelMatcher(name=name, type=MatchType.EQUAL, value=value)


class Inhibitor:
    """Which inhibition windows a source alert holds open, and when they lapse."""

    def __init__(self, rules: InhibitRules, lifetime_seconds: float) -> None:
        self.rules = [(r, r.sources(), r.targets()) for r in rules.rule]
        # A window lasts this long after the source's latest notification; it is renewed once
        # half of it has passed, so a source that stops sending without resolving lets go.
        self.lifetime = timedelta(seconds=lifetime_seconds)

    def window_id(self, rule: InhibitRule, fingerprint: str) -> str:
        return f"{PREFIX}{rule.name}:{fingerprint}"

    def sources(self, labels: Mapping[str, str]) -> list[tuple[InhibitRule, list[Matcher], list[Matcher]]]:
        """The rules this alert is a source of."""
        return [(r, s, t) for r, s, t in self.rules if matches_all(s, labels)]

    def follow(
        self, state: AlertState, labels: Mapping[str, str], now: datetime
    ) -> tuple[list[MaintenanceWindow], list[str]]:
        """After an alert was processed (or ticked): the inhibition windows to publish and the ids
        of those to delete; state remembers which it holds and until when.

        A firing source publishes its windows when it starts to fire and again once half of their
        lifetime has passed; a source that no longer fires (or no longer matches) deletes them."""
        firing = state.status == AlertStatus.FIRING.value
        wanted = {self.window_id(r, state.fingerprint): (r, s, t) for r, s, t in self.sources(labels)}
        if not firing:
            wanted = {}
        gone = [w for w in state.inhibiting if w not in wanted]
        renew = state.inhibit_until is None or now >= state.inhibit_until - self.lifetime / 2
        fresh = [w for w in wanted if w not in state.inhibiting or renew]
        if fresh:
            state.inhibit_until = now + self.lifetime
        state.inhibiting = sorted(wanted)
        if not wanted:
            state.inhibit_until = None
        alertname = labels.get("alertname") or "alert"
        out = []
        for window_id in fresh:
            rule, source, target = wanted[window_id]
            out.append(
                MaintenanceWindow(
                    window_id=window_id,
                    kind=WindowKind.INHIBITION,
                    scope=WindowScope.GLOBAL,
                    starts_at=now,
                    ends_at=state.inhibit_until or now + self.lifetime,
                    reason=f"inhibited by {alertname} {state.fingerprint} (rule {rule.name})",
                    created_by=f"inhibit rule {rule.name}",
                    updated_at=now,
                    matchers=_label_matchers(target) + [equal(n, labels.get(n, "")) for n in rule.equal],
                    # Two-sided: this source spares targets that match the source side too.
                    except_matchers=_label_matchers(source) if matches_all(target, labels) else [],
                )
            )
        return out, gone
