"""Label matchers with Alertmanager's semantics: `=`, `!=`, `=~`, `!~`; regular expressions are RE2
(through google-re2, the engine Go's regexp follows) and anchored at both ends; a label an alert
does not carry matches as the empty string. Parsing follows Alertmanager's classic matcher parser
(pkg/labels/parse.go): `{name="value", other=~"re.*"}` or the same without braces, values quoted
or not, `\\"`, `\\\\` and `\\n` escapes in quoted values, commas inside quotes kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is a ValueError for the caller, never a line on stderr

# name, operator ('=~' before '=': the longest operator first), the rest as the raw value.
_MATCHER = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*\Z", re.DOTALL)


class MatchType(StrEnum):
    """The four matcher types (named as the Avro enum of MaintenanceWindow.matchers names them)."""

    EQUAL = "EQUAL"
    NOT_EQUAL = "NOT_EQUAL"
    REGEX = "REGEX"
    NOT_REGEX = "NOT_REGEX"

    @property
    def op(self) -> str:
        return OPERATORS[self]


OPERATORS = {
    MatchType.EQUAL: "=",
    MatchType.NOT_EQUAL: "!=",
    MatchType.REGEX: "=~",
    MatchType.NOT_REGEX: "!~",
}
BY_OPERATOR = {op: t for t, op in OPERATORS.items()}


@dataclass(frozen=True)
class Matcher:
    """One label matcher; regexes are compiled once, anchored (`^(?:value)$`)."""

    name: str
    type: MatchType
    value: str
    _re: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.type in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                compiled = re2.compile(f"^(?:{self.value})$", options=_OPTIONS)
            except re2.error as exc:
                detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
                raise ValueError(
                    f"{self.name}{self.type.op}{self.value!r}: not an RE2 regex ({detail})"
                ) from None
            object.__setattr__(self, "_re", compiled)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self.type is MatchType.EQUAL:
            return value == self.value
        if self.type is MatchType.NOT_EQUAL:
            return value != self.value
        found = self._re.fullmatch(value) is not None
        return found if self.type is MatchType.REGEX else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.type.op}"{escaped}"'


@functools.lru_cache(maxsize=4096)
def compiled(name: str, type_: MatchType, value: str) -> Matcher:
    """The same matcher once (a regex compiled once however many alerts meet it)."""
    return Matcher(name, type_, value)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (no matchers: everything)."""
    return all(m.matches(labels) for m in matchers)


def parse_matcher(text: str) -> Matcher:
    """One matcher, e.g. `severity=~"crit.*"` or `alertname=DiskFull`; ValueError names the problem."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(f"bad matcher format: {text}")
    name, op, raw = found.groups()
    quoted = raw.startswith('"')
    if quoted:
        raw = raw[1:]
    value: list[str] = []
    escaped = False
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            value.append({"n": "\n", '"': '"', "\\": "\\"}.get(ch, "\\" + ch))
            continue
        if ch == "\\":
            if i < len(raw) - 1:
                escaped = True
                continue
            value.append("\\")  # a trailing backslash is literal
        elif ch == '"':
            if not quoted or i < len(raw) - 1:
                raise ValueError(f"matcher value contains unescaped double quote: {found.group(3)}")
            quoted = False  # the closing quote
        else:
            value.append(ch)
    if quoted:
        raise ValueError(f"matcher value contains unescaped double quote: {found.group(3)}")
    return Matcher(name, BY_OPERATOR[op], "".join(value))


def parse_matchers(text: str) -> list[Matcher]:
    """`{a="b", c=~"d.*"}` (braces optional) as matchers; commas inside quotes belong to the value."""
    body = text.strip()
    body = body.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    current: list[str] = []
    inside = escaped = False
    for ch in body:
        if ch == "," and not inside:
            tokens.append("".join(current))
            current = []
            continue
        if ch == '"':
            if not escaped:
                inside = not inside
            else:
                escaped = False
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        current.append(ch)
    if "".join(current).strip():
        tokens.append("".join(current))
    return [parse_matcher(token) for token in tokens]
