"""CIUpdateValidator: is a proposed CI update allowed and valid, what did it change, and does it need a
change request? Pure: the previous accepted version, the rules and the moment decide."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.core.dlq import ErrorClass
from streams.core.models import ChangeAction, ChangeCommand, ChangeType, ConfigurationItem
from streams.core.rules import ChangeRules

# Bookkeeping fields: they change on every update and never make a change by themselves.
UNTRACKED = frozenset({"ci_id", "source_system", "updated_at"})


@dataclass(frozen=True)
class CIVerdict:
    """Accepted (with what changed, and the change request if any) or rejected with the reasons."""

    accepted: bool
    error_class: ErrorClass | None = None
    reasons: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    significant: list[str] = field(default_factory=list)
    change: ChangeCommand | None = None

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
        return sorted(k for k, v in after.items() if v not in ("", "[]", "false"))
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
        if prev is not None and new.updated_at < prev.updated_at:
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
        problems = [] if new.deleted else self._invalid(new)
        if problems:
            return CIVerdict(False, ErrorClass.VALIDATION, problems, changed)
        significant = [f for f in changed if f in self.rules.significant]
        change = None
        if prev is None:
            if self.rules.change_on_create:
                change = self._change(new, None, ["created"], ChangeType.STANDARD, now)
        elif significant:
            standard = all(f in self.rules.standard for f in significant)
            change = self._change(
                new, prev, significant, ChangeType.STANDARD if standard else ChangeType.NORMAL, now
            )
        return CIVerdict(True, None, [], changed, significant, change)

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
    ) -> ChangeCommand:
        before = field_values(prev) if prev else {}
        after = field_values(new)
        lines = [f"{f}: {before.get(f, '') or '(none)'} -> {after.get(f, '') or '(none)'}" for f in fields]
        ident = f"ci-{new.ci_id}-{int(new.updated_at.timestamp() * 1000)}"
        return ChangeCommand(
            command_id=ident,
            correlation_id=ident,
            action=ChangeAction.CREATE,
            change_type=change_type,
            short_description=f"CI {new.name} ({new.ci_id}): {', '.join(fields)} changed"[:160],
            description=f"Reported by {new.source_system} at {new.updated_at.isoformat()}.\n"
            + "\n".join(lines),
            service=new.service,
            ci_ids=[new.ci_id],
            requested_by=new.source_system,
            issued_at=now,
        )
