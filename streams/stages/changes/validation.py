"""CIUpdateValidator: is a proposed CI update allowed and valid, which of its values win against the
sources that set the current ones (reconciliation), what did it change, and does it need a change
request? Pure: the previous accepted version, the rules and the moment decide."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.core.dlq import ErrorClass
from streams.core.models import ChangeAction, ChangeCommand, ChangeType, ConfigurationItem, FieldSource
from streams.core.rules import ChangeRules, ReconcileRule

# Bookkeeping fields: they change on every update and never make a change by themselves.
UNTRACKED = frozenset({"ci_id", "source_system", "updated_at", "provenance"})
# Field values that mean "not set" (an empty text, list or map, false): nobody holds them.
EMPTY = frozenset({"", "[]", "false"})


@dataclass(frozen=True)
class FieldDecision:
    """How one field of an update fared against the source of the CMDB's value."""

    path: str
    won: bool
    outcome: str  # won_new, won_same_source, won_newest, won_priority, won_stale, lost_older, lost_priority
    offered: str  # the update's value, as comparable text
    kept: str  # the CMDB's value before the update
    holder: FieldSource | None  # who set the CMDB's value (None: nobody yet)
    rule: ReconcileRule | None

    @property
    def metric_field(self) -> str:
        """The field as a metric label: attributes collapse to the rule's pattern (bounded)."""
        if not self.path.startswith("attributes."):
            return self.path
        if self.rule is not None:
            return next((f for f in self.rule.fields if f.startswith("attributes")), "attributes.*")
        return "attributes.*"


def decide(
    rule: ReconcileRule | None, holder: FieldSource | None, source: str, at: datetime
) -> tuple[bool, str]:
    """Whether a value reported by source at `at` replaces the one holder set (deterministic: only
    the records decide, so a replay decides the same). Without a rule the newer report wins; with
    one the higher-priority source wins, and a lower-priority source wins only once the holder has
    not confirmed its value for the holder's refresh period (its data is stale)."""
    if holder is None:
        return True, "won_new"
    if holder.source == source:
        return (True, "won_same_source") if at >= holder.at else (False, "lost_older")
    if rule is None or rule.rank(source) == rule.rank(holder.source):
        return (True, "won_newest") if at >= holder.at else (False, "lost_older")
    if rule.rank(source) < rule.rank(holder.source):
        return True, "won_priority"
    refresh = rule.refresh.get(holder.source)
    if refresh is not None and (at - holder.at).total_seconds() > refresh:
        return True, "won_stale"
    return False, "lost_priority"


@dataclass(frozen=True)
class CIVerdict:
    """Accepted (with what changed, and the change request if any) or rejected with the reasons."""

    accepted: bool
    error_class: ErrorClass | None = None
    reasons: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    significant: list[str] = field(default_factory=list)
    change: ChangeCommand | None = None
    ci: ConfigurationItem | None = None  # the version to write to cmdb.ci (None: nothing to write)
    decisions: list[FieldDecision] = field(default_factory=list)

    @property
    def lost(self) -> list[FieldDecision]:
        return [d for d in self.decisions if not d.won]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def field_values(ci: ConfigurationItem) -> dict[str, str]:
    """Each tracked field path of a CI and its value as comparable text."""
    data: dict[str, Any] = ci.model_dump(mode="json")
    out: dict[str, str] = {}
    for name, value in data.items():
        if name in UNTRACKED:
            continue
        if name == "attributes":
            for key, attr in value.items():
                out[f"attributes.{key}"] = str(attr)
            continue
        if isinstance(value, list):
            value = sorted(json.dumps(v, sort_keys=True) for v in value)
        out[name] = "" if value is None else (value if isinstance(value, str) else json.dumps(value))
    return out


def changed_fields(prev: ConfigurationItem | None, new: ConfigurationItem) -> list[str]:
    """Field paths whose value differs (every non-empty field when there is no previous version)."""
    after = field_values(new)
    if prev is None:
        return sorted(k for k, v in after.items() if v not in EMPTY)
    before = field_values(prev)
    return sorted(k for k in before.keys() | after.keys() if before.get(k, "") != after.get(k, ""))


class CIUpdateValidator:
    """Validates CI updates against the change rules and derives change requests."""

    def __init__(self, rules: ChangeRules) -> None:
        self.rules = rules

    def check(self, prev: ConfigurationItem | None, new: ConfigurationItem, now: datetime) -> CIVerdict:
        grant = self.rules.sources.get(new.source_system)
        if grant is None:
            return CIVerdict(
                False,
                ErrorClass.AUTH,
                [f"source {new.source_system!r} is not allowed to update CIs (not in the change rules)"],
            )
        if prev is not None and new.source_system == prev.source_system and new.updated_at < prev.updated_at:
            return CIVerdict(
                False,
                ErrorClass.CONFLICT,
                [
                    f"update of {new.updated_at.isoformat()} is older than the CMDB's version of "
                    f"{prev.updated_at.isoformat()} (from {prev.source_system})"
                ],
            )
        changed = changed_fields(prev, new)
        if prev is None and not grant.create:
            return CIVerdict(False, ErrorClass.AUTH, [f"source {new.source_system!r} may not create CIs"])
        if prev is not None:
            denied = [f for f in changed if not grant.may_change(f)]
            if denied:
                owner = (
                    f" (last written by {prev.source_system})"
                    if prev.source_system != new.source_system
                    else ""
                )
                return CIVerdict(
                    False,
                    ErrorClass.AUTH,
                    [f"source {new.source_system!r} may not change {', '.join(denied)}{owner}"],
                    changed,
                )
        merged, decisions = self.reconcile(prev, new, now)
        problems = [] if merged.deleted else self._invalid(merged)
        if problems:
            return CIVerdict(False, ErrorClass.VALIDATION, problems, changed, decisions=decisions)
        applied = changed_fields(prev, merged)
        significant = [f for f in applied if f in self.rules.significant]
        change = None
        if prev is None:
            if self.rules.change_on_create:
                change = self._change(merged, None, ["created"], ChangeType.STANDARD, now, new.updated_at)
        elif significant:
            standard = all(f in self.rules.standard for f in significant)
            change = self._change(
                merged,
                prev,
                significant,
                ChangeType.STANDARD if standard else ChangeType.NORMAL,
                now,
                new.updated_at,
            )
        write = merged if prev is None or merged != prev else None
        return CIVerdict(True, None, [], applied, significant, change, write, decisions)

    def reconcile(
        self, prev: ConfigurationItem | None, new: ConfigurationItem, now: datetime
    ) -> tuple[ConfigurationItem, list[FieldDecision]]:
        """The CI after this update: each field the update's source may write takes the update's
        value where it wins (decide) and keeps the CMDB's where it loses; provenance names the
        source of every value and when that source last reported it."""
        at = min(new.updated_at, now)  # a source's clock ahead of ours claims nothing extra
        if prev is None:
            values = field_values(new)
            provenance = {
                p: FieldSource(source=new.source_system, at=at) for p, v in values.items() if v not in EMPTY
            }
            return new.model_copy(update={"provenance": provenance}), []
        grant = self.rules.sources[new.source_system]
        before, after = field_values(prev), field_values(new)
        legacy = FieldSource(source=prev.source_system, at=prev.updated_at)  # a version without provenance
        provenance = dict(prev.provenance)
        decisions: list[FieldDecision] = []
        won: list[str] = []
        for path in sorted(before.keys() | after.keys()):
            if not grant.may_change(path):
                continue
            old, offered = before.get(path, ""), after.get(path, "")
            holder = prev.provenance.get(path) or (legacy if old not in EMPTY else None)
            rule = self.rules.reconcile_rule(prev.ci_class, path)
            wins, outcome = decide(rule, holder, new.source_system, at)
            if offered == old:
                # A confirmation: the value's source and age follow the reporter.
                if wins and offered not in EMPTY:
                    provenance[path] = FieldSource(source=new.source_system, at=at)
                continue
            decisions.append(FieldDecision(path, wins, outcome, offered, old, holder, rule))
            if not wins:
                continue
            won.append(path)
            if offered not in EMPTY:
                provenance[path] = FieldSource(source=new.source_system, at=at)
            else:
                provenance.pop(path, None)
        data = prev.model_dump()
        fresh = new.model_dump()
        for path in won:
            if path.startswith("attributes."):
                key = path.removeprefix("attributes.")
                if key in new.attributes:
                    data["attributes"][key] = new.attributes[key]
                else:
                    data["attributes"].pop(key, None)
            else:
                data[path] = fresh[path]
        if won or provenance != prev.provenance:
            data["source_system"] = new.source_system
            data["updated_at"] = max(prev.updated_at, at)
        data["provenance"] = provenance
        return ConfigurationItem.model_validate(data), decisions

    def _invalid(self, ci: ConfigurationItem) -> list[str]:
        values = field_values(ci)
        problems = [f"required field {f} is empty" for f in self.rules.required if not values.get(f)]
        for path, allowed in sorted(self.rules.allowed.items()):
            value = values.get(path, "")
            if value and value not in allowed:
                problems.append(f"{path} {value!r} is not one of {allowed}")
        return problems

    @staticmethod
    def _change(
        new: ConfigurationItem,
        prev: ConfigurationItem | None,
        fields: list[str],
        change_type: ChangeType,
        now: datetime,
        reported: datetime,
    ) -> ChangeCommand:
        before = field_values(prev) if prev else {}
        after = field_values(new)
        lines = [f"{f}: {before.get(f, '') or '(none)'} -> {after.get(f, '') or '(none)'}" for f in fields]
        ident = f"ci-{new.ci_id}-{int(reported.timestamp() * 1000)}"  # the same update, the same id
        return ChangeCommand(
            command_id=ident,
            correlation_id=ident,
            action=ChangeAction.CREATE,
            change_type=change_type,
            short_description=f"CI {new.name} ({new.ci_id}): {', '.join(fields)} changed"[:160],
            description=f"Reported by {new.source_system} at {reported.isoformat()}.\n" + "\n".join(lines),
            service=new.service,
            ci_ids=[new.ci_id],
            requested_by=new.source_system,
            issued_at=now,
        )
