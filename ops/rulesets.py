"""Rule sets on the compacted rules.sets topic: what the workers run (key `current`), every set
applied (keys `set:<id>`), and the checks before one is published (valid, every changed file's
version bumped)."""

from __future__ import annotations

import difflib
import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from streams.core.models import RuleFile, RuleSet
from streams.core.rules import RuleError, rules_from_texts
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings

CURRENT = "current"


class RuleSetError(ValueError):
    """A rule set that must not reach the workers (the message says why and what to do)."""


def files_of(texts: Mapping[str, str], origin: str) -> dict[str, RuleFile]:
    """The files of a set, validated together (RuleError names the file at fault)."""
    rules_from_texts(dict(texts), origin)
    out = {}
    for name, text in sorted(texts.items()):
        version = int(tomllib.loads(text)["version"])  # every rule model requires it
        out[name] = RuleFile(version=version, sha256=hashlib.sha256(text.encode()).hexdigest(), text=text)
    return out


def set_id(files: Mapping[str, RuleFile], now: datetime) -> str:
    digest = hashlib.sha256("".join(f"{n}:{f.sha256}" for n, f in sorted(files.items())).encode()).hexdigest()
    return f"{now:%Y%m%dT%H%M%SZ}-{digest[:8]}"


def bump_problems(new: Mapping[str, RuleFile], current: RuleSet | None) -> list[str]:
    """Every file whose text changed while its version did not go up."""
    if current is None:
        return []
    problems = []
    for name, f in sorted(new.items()):
        old = current.files.get(name)
        if old is not None and old.sha256 != f.sha256 and f.version <= old.version:
            problems.append(
                f"{name} changed but its version is {f.version} (the running one is {old.version}): "
                f"set version = {old.version + 1}"
            )
    return problems


@dataclass
class Sets:
    current: RuleSet | None
    history: list[RuleSet]  # oldest first

    def find(self, ident: str) -> RuleSet | None:
        return next((s for s in self.history if s.set_id == ident or s.set_id.startswith(ident)), None)


def read(settings: Settings, serde: AvroSerde) -> Sets:
    from ops.drift import latest
    from streams.core.topics import RULES

    current, history = None, []
    for key, value in latest(settings, settings.topic(RULES)):
        if value is None:
            continue
        try:
            rule_set = serde.decode(value, RuleSet)
        except SerdeError as exc:
            raise RuleSetError(f"{settings.topic(RULES)} key {key.decode()!r}: {exc}") from None
        if key == CURRENT.encode():
            current = rule_set
        else:
            history.append(rule_set)
    return Sets(current, sorted(history, key=lambda s: s.applied_at))


def diff(old: RuleSet | None, new: Mapping[str, RuleFile], old_name: str, new_name: str) -> str:
    """A unified diff of every file that differs."""
    out: list[str] = []
    for name in sorted(set(new) | set(old.files if old else {})):
        before = old.files[name].text if old and name in old.files else ""
        after = new[name].text if name in new else ""
        if before != after:
            out.extend(
                difflib.unified_diff(
                    before.splitlines(keepends=True),
                    after.splitlines(keepends=True),
                    f"{old_name}/{name}",
                    f"{new_name}/{name}",
                )
            )
    return "".join(out)


def validate_set(rule_set: RuleSet) -> None:
    """RuleSetError unless the set's files load together."""
    try:
        rules_from_texts({n: f.text for n, f in rule_set.files.items()}, f"rule set {rule_set.set_id}")
    except RuleError as exc:
        raise RuleSetError(str(exc)) from None
