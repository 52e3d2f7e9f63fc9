"""Rule files (ops/rules/*.toml): versioned data for severity, correlation, lifecycle, fingerprints,
changes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streams.core import telemetry
from streams.core.matchers import Matcher, parse_matchers

LEVELS = ("critical", "error", "warning", "info")


class RuleError(ValueError):
    """A rule file is missing or invalid; the message names the file and the problem."""


def _matchers(texts: list[str]) -> list[Matcher]:
    out: list[Matcher] = []
    for text in texts:
        out.extend(parse_matchers(text))  # ValueError names a bad one
    return out


def _checked_matchers(texts: list[str]) -> list[str]:
    _matchers(texts)
    return texts


def _checked_label_names(names: list[str]) -> list[str]:
    for name in names:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            raise ValueError(f"{name!r} is not a label name")
    return names


# Label matchers as rule files write them ('namespace=~"dev-.*"'), checked when loaded.
MatcherTexts = Annotated[list[str], AfterValidator(_checked_matchers)]
LabelNames = Annotated[list[str], AfterValidator(_checked_label_names)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SeverityRules(_Frozen):
    """Source severity and CI criticality/tier to impact, urgency and priority."""

    version: int
    default_level: Literal["critical", "error", "warning", "info"]
    levels: dict[str, dict[str, Literal["critical", "error", "warning", "info"]]]
    urgency: dict[str, int]
    default_impact: int = Field(ge=1, le=3)
    impact: dict[str, dict[str, int]]
    priority: dict[str, int]

    @model_validator(mode="after")
    def _complete(self) -> SeverityRules:
        missing = [lvl for lvl in LEVELS if lvl not in self.urgency]
        if missing:
            raise ValueError(f"urgency has no value for {missing}")
        cells = [f"{i},{u}" for i in (1, 2, 3) for u in (1, 2, 3)]
        if sorted(self.priority) != sorted(cells):
            raise ValueError(f"priority must have exactly the cells {cells}")
        return self

    def level(self, source: str, severity: str) -> str:
        """The canonical level of a source's severity word (default_level, counted, if unmapped)."""
        table = self.levels.get(source.lower(), {})
        found = table.get(severity.strip().lower())
        if found is None:
            telemetry.UNMAPPED_VALUES.labels("severity", source.lower()).inc()
            return self.default_level
        return found

    def impact_for(self, criticality: str | None, tier: str | None) -> int:
        """Impact from criticality, raised by the service tier if that is higher."""
        candidates = [self.default_impact]
        if criticality is not None:
            value = self.impact.get("criticality", {}).get(criticality)
            if value is None:
                telemetry.UNMAPPED_VALUES.labels("impact.criticality", criticality).inc()
            else:
                candidates = [value]
        if tier is not None:
            value = self.impact.get("tier", {}).get(tier)
            if value is None:
                telemetry.UNMAPPED_VALUES.labels("impact.tier", "tier").inc()
            else:
                candidates.append(value)
        return min(candidates)

    def priority_for(self, impact: int, urgency: int) -> int:
        return self.priority[f"{impact},{urgency}"]


class CorrelationRule(_Frozen):
    name: str
    kind: Literal["ci_id", "hostname", "ip", "service"]
    labels: list[str] = Field(min_length=1)


class Topology(_Frozen):
    relationships: list[str]
    max_depth: int = Field(ge=1, le=10)
    # A CI's incident that opens after incidents of CIs depending on it (the parent fired late):
    # "link" notes the cause on each and lists them on the parent; "resolve" also resolves them
    # as caused by the parent; "none" leaves them be.
    late_parent: Literal["link", "resolve", "none"] = "link"


class Sampling(_Frozen):
    rate: float = Field(ge=0.0, le=1.0)


class Grouping(_Frozen):
    """Alertmanager's group_by (ServiceNow's alert aggregation): alerts with the same values of
    these labels join the incident of the first of them opened within group_window seconds; it
    resolves once every member cleared and stayed clear. Empty group_by: no grouping."""

    group_by: LabelNames = Field(default_factory=list)
    group_window: float = Field(300, gt=0)


class Cause(_Frozen):
    """Which deployment an incident names as its probable cause: one that finished on its CI, on a
    CI it depends on, or on its service within change_lookback seconds before it opened."""

    change_lookback: float = Field(7200, gt=0)


class CorrelationRules(_Frozen):
    """How alerts find their CI, how topology groups them, how decisions are sampled."""

    version: int
    rules: list[CorrelationRule] = Field(min_length=1)
    topology: Topology
    sampling: Sampling
    cause: Cause = Field(default_factory=Cause)
    grouping: Grouping = Field(default_factory=Grouping)


class LifecycleRules(_Frozen):
    """Dedup window and incident lifecycle periods, in seconds."""

    version: int
    dedup_window: float = Field(ge=0)
    stable_period: float = Field(ge=0)
    reopen_period: float = Field(ge=0)
    signal_timeout: float = Field(gt=0)
    tick_interval: float = Field(gt=0, le=60)
    # An incident a person resolved (or closed) in the ITSM while its alert still fires: after
    # reopen_period of firing, "reopen" it with a note, or open a "new" one.
    person_resolved: Literal["reopen", "new"] = "reopen"
    # Flap damping: once an incident flapped flap_threshold times within flap_period seconds, one
    # summary note says so and further flaps in that period write none (counted, and summed up in
    # the resolution note). 0 turns damping off: every flap writes its note.
    flap_threshold: int = Field(0, ge=0)
    flap_period: float = Field(3600, gt=0)
    # Hold: a new alert opens its incident only once it fired continuously for open_after_seconds,
    # or sent open_after_count notifications within open_after_window seconds (whichever comes
    # first; 0 turns each off). One that resolves inside the hold ends quietly, counted as held.
    open_after_seconds: float = Field(0, ge=0)
    open_after_count: int = Field(0, ge=0)
    open_after_window: float = Field(600, gt=0)


class FingerprintRules(_Frozen):
    """Per source: keep the source's fingerprint, or hash only the listed labels."""

    version: int
    sources: dict[str, Literal["source"] | list[str]]

    @field_validator("sources")
    @classmethod
    def _non_empty_lists(cls, v: dict[str, object]) -> dict[str, object]:
        for name, rule in v.items():
            if isinstance(rule, list) and not rule:
                raise ValueError(f"{name}: an empty label list would give every alert one fingerprint")
        return v


class SourceGrant(_Frozen):
    """What one source system may do to CIs: create them, and which fields it may change."""

    create: bool = False
    fields: list[str] = Field(min_length=1)

    def may_change(self, path: str) -> bool:
        """Whether this source may change the field path ("attributes.version" is matched by
        "attributes.version", "attributes.*", "attributes" and "*")."""
        return any(path_matches(g, path) for g in self.fields)


def path_matches(pattern: str, path: str) -> bool:
    """Whether a field pattern covers a field path: "attributes.version" is matched by itself,
    "attributes.*", "attributes" and "*"."""
    head = path.split(".", 1)[0]
    return pattern in ("*", path, head) or (pattern.endswith(".*") and path.startswith(pattern[:-1]))


class ReconcileRule(_Frozen):
    """Which sources may set these fields of CIs of these classes, in priority order, and when a
    source's value is stale (modelled on ServiceNow's static reconciliation rules and data
    refresh rules: a higher-priority source's value stands until that source has not confirmed it
    for its refresh period, then a lower-priority source may replace it)."""

    classes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    fields: list[str] = Field(min_length=1)
    priority: list[str] = Field(min_length=1)  # first is highest
    refresh: dict[str, float] = Field(default_factory=dict)  # source -> seconds until stale

    @model_validator(mode="after")
    def _consistent(self) -> ReconcileRule:
        if len(set(self.priority)) != len(self.priority):
            raise ValueError(f"priority lists a source twice: {self.priority}")
        stray = sorted(set(self.refresh) - set(self.priority))
        if stray:
            raise ValueError(f"refresh names sources not in priority: {stray}")
        if any(v <= 0 for v in self.refresh.values()):
            raise ValueError("refresh periods must be positive seconds")
        return self

    def covers(self, ci_class: str, path: str) -> bool:
        return ("*" in self.classes or ci_class in self.classes) and any(
            path_matches(f, path) for f in self.fields
        )

    def rank(self, source: str) -> int:
        """0 for the highest priority; a source not listed ranks after every listed one."""
        return self.priority.index(source) if source in self.priority else len(self.priority)


class ChangeRules(_Frozen):
    """Validation of CI updates (who may change what, required fields, allowed values), which
    changes are significant enough for a change request and of which type, and parking."""

    version: int
    sources: dict[str, SourceGrant] = Field(min_length=1)
    required: list[str] = Field(default_factory=list)
    allowed: dict[str, list[str]] = Field(default_factory=dict)
    significant: list[str] = Field(default_factory=list)
    standard: list[str] = Field(default_factory=list)
    change_on_create: bool = False
    park_timeout: float = Field(600, gt=0)
    park_recheck: float = Field(2.0, gt=0, le=60)
    reconcile: list[ReconcileRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _standard_within_significant(self) -> ChangeRules:
        stray = [f for f in self.standard if f not in self.significant]
        if stray:
            raise ValueError(f"standard fields {stray} are not in significant")
        unknown = sorted({s for r in self.reconcile for s in r.priority} - set(self.sources))
        if unknown:
            raise ValueError(f"reconcile names sources without a grant in [sources]: {unknown}")
        return self

    def reconcile_rule(self, ci_class: str, path: str) -> ReconcileRule | None:
        """The rule deciding this field of this class: one naming the class before a "*" one,
        earlier before later."""
        named = [r for r in self.reconcile if ci_class in r.classes and r.covers(ci_class, path)]
        if named:
            return named[0]
        return next((r for r in self.reconcile if r.covers(ci_class, path)), None)


class EventWhen(_Frozen):
    """An event rule's conditions: all must hold (an empty one holds always)."""

    source: list[str] = Field(default_factory=list)  # any of these sources (ALERTMANAGER, ...)
    severity: list[str] = Field(default_factory=list)  # any of these severity words (lower case)
    labels: MatcherTexts = Field(default_factory=list)  # label matchers, e.g. 'namespace=~"dev-.*"'
    annotations: MatcherTexts = Field(default_factory=list)  # matchers on the annotations

    @field_validator("source")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [s.upper() for s in v]

    @field_validator("severity")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [s.lower() for s in v]


class EventThen(_Frozen):
    """What an event rule does, in this order: rename labels, set labels, set severity, CI, route;
    or drop the alert (recorded in alerts.suppressed with the rule's name)."""

    drop: bool = False
    rename_labels: dict[str, str] = Field(default_factory=dict)
    set_labels: dict[str, str] = Field(default_factory=dict)
    severity: str | None = None
    ci: str | None = None  # sets the ci_id label, which correlation's first rule reads
    route: str | None = None  # sets the route label (for routing)

    @model_validator(mode="after")
    def _something(self) -> EventThen:
        changes = self.rename_labels or self.set_labels or self.severity or self.ci or self.route
        if self.drop and changes:
            raise ValueError("a rule that drops cannot also change the alert")
        if not self.drop and not changes:
            raise ValueError("a rule must drop or change something")
        return self


class EventRule(_Frozen):
    name: str = Field(min_length=1, pattern=r"^[a-zA-Z0-9_.-]+$")  # a metric label
    when: EventWhen = Field(default_factory=EventWhen)
    then: EventThen
    stop: bool = False  # no later rule applies once this one matched


class EventRules(_Frozen):
    """Ordered rules applied to every alert before it is deduplicated (ops/rules/events.toml)."""

    version: int
    rule: list[EventRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> EventRules:
        names = [r.name for r in self.rule]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return self


class InhibitRule(_Frozen):
    """One inhibition rule, as in Alertmanager's `inhibit_rules`: while an alert matching
    source_matchers fires, alerts matching target_matchers whose `equal` labels have the same
    values (absent on both counts as equal) stay quiet."""

    name: str = Field(min_length=1, pattern=r"^[a-zA-Z0-9_.-]+$")  # in window ids and reasons
    source_matchers: MatcherTexts = Field(min_length=1)
    target_matchers: MatcherTexts = Field(min_length=1)
    equal: LabelNames = Field(default_factory=list)

    def sources(self) -> list[Matcher]:
        return _matchers(self.source_matchers)

    def targets(self) -> list[Matcher]:
        return _matchers(self.target_matchers)


class InhibitRules(_Frozen):
    """Inhibition rules (ops/rules/inhibit.toml)."""

    version: int
    rule: list[InhibitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> InhibitRules:
        names = [r.name for r in self.rule]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return self


# The sinks a route may name (connectors/registry.py's SINKS; a test keeps the two equal).
ROUTE_TARGETS = ("servicenow", "jira", "rt", "webhook")
# What a route may set per target when an incident opens (anything else is refused at load).
ROUTE_FIELDS = {
    "servicenow": r"[a-z][a-z0-9_]*",  # incident columns: assignment_group, category, u_* ...
    "jira": r"service_desk|request_type",  # ids of the JSM service desk and request type
    "rt": r"queue",
    "webhook": r"[a-zA-Z_][a-zA-Z0-9_]*",
}
# Columns the ServiceNow sink writes itself (identity, text, state): no route sets them.
ROUTE_RESERVED = frozenset(
    {
        "sys_id", "number", "state", "correlation_id", "correlation_display", "caller_id",
        "short_description", "description", "work_notes", "comments", "close_code", "close_notes",
        "impact", "urgency", "priority", "cmdb_ci", "contact_type",
    }
)  # fmt: skip


class Route(_Frozen):
    """One node of the route tree (routes.toml), as Alertmanager's routes: an incident goes down
    the first child whose matchers match (all of them), and on to later siblings only when the
    matching one says `continue`. A node's targets and fields default to its parent's."""

    name: str = Field(min_length=1, pattern=r"^[a-zA-Z0-9_.-]+$")  # a metric label
    matchers: MatcherTexts = Field(default_factory=list)
    targets: list[str] | None = None
    fields: dict[str, dict[str, str]] = Field(default_factory=dict)
    continue_: bool = Field(False, alias="continue")
    route: list[Route] = Field(default_factory=list)
    # The hold of the incidents this route takes (lifecycle.toml's open_after_* when unset).
    open_after_seconds: float | None = Field(None, ge=0)
    open_after_count: int | None = Field(None, ge=0)

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: list[str] | None) -> list[str] | None:
        for target in v or []:
            if target not in ROUTE_TARGETS:
                raise ValueError(f"unknown target {target!r} (known: {', '.join(ROUTE_TARGETS)})")
        return v

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for target, values in v.items():
            if target not in ROUTE_FIELDS:
                raise ValueError(f"fields: unknown target {target!r} (known: {', '.join(ROUTE_TARGETS)})")
            for name in values:
                if not re.fullmatch(ROUTE_FIELDS[target], name) or (
                    target == "servicenow" and name in ROUTE_RESERVED
                ):
                    raise ValueError(f"fields.{target}: {name!r} is not a field a route may set there")
        return v

    def compiled(self) -> list[Matcher]:
        return _matchers(self.matchers)


class RouteRules(_Frozen):
    """The route tree (ops/rules/routes.toml): which sinks get an incident, with which fields.
    The root has no matchers; with no route and no targets every sink gets every incident."""

    version: int
    targets: list[str] = Field(default_factory=list)  # the root's: empty is every sink
    fields: dict[str, dict[str, str]] = Field(default_factory=dict)
    route: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid_root(self) -> RouteRules:
        Route(name="root", targets=self.targets, fields=self.fields)  # the same checks as a node
        names: list[str] = []

        def walk(routes: list[Route]) -> None:
            for r in routes:
                names.append(r.name)
                walk(r.route)

        walk(self.route)
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        return self


class Display(_Frozen):
    """How one ITSM's text shows times: an IANA time zone and a CLDR locale."""

    time_zone: str = "UTC"
    locale: str = "en_US"

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return v

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        from babel import Locale, UnknownLocaleError

        try:
            Locale.parse(v)
        except (UnknownLocaleError, ValueError):
            raise ValueError(f"{v!r} is not a locale (e.g. de_DE, en_GB)") from None
        return v


class TemplateRules(_Frozen):
    """Per-target incident templates (ops/rules/templates.toml): Jinja2 text for the title
    (short_description) and body (description) each ITSM shows when an incident opens, and the
    zone and locale each shows times in."""

    version: int
    servicenow: dict[str, str] = Field(default_factory=dict)
    jira: dict[str, str] = Field(default_factory=dict)
    rt: dict[str, str] = Field(default_factory=dict)
    webhook: dict[str, str] = Field(default_factory=dict)
    display: dict[str, Display] = Field(default_factory=dict)

    @field_validator("display")
    @classmethod
    def _targets(cls, v: dict[str, Display]) -> dict[str, Display]:
        unknown = sorted(set(v) - set(ROUTE_TARGETS))
        if unknown:
            raise ValueError(f"display names unknown targets {unknown} (targets: {list(ROUTE_TARGETS)})")
        return v

    @field_validator("servicenow", "jira", "rt", "webhook")
    @classmethod
    def _parses(cls, v: dict[str, str]) -> dict[str, str]:
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment()
        for name, text in v.items():
            if name not in ("short_description", "description"):
                raise ValueError(f"{name!r}: a template sets short_description or description")
            try:
                env.parse(text)
            except TemplateSyntaxError as exc:
                raise ValueError(f"{name}: line {exc.lineno}: {exc.message}") from None
        return v

    def texts(self) -> dict[str, dict[str, str]]:
        return {t: dict(getattr(self, t)) for t in ROUTE_TARGETS if getattr(self, t)}


class Rules(_Frozen):
    """Every rule file, loaded and validated together."""

    severity: SeverityRules
    correlation: CorrelationRules
    lifecycle: LifecycleRules
    fingerprint: FingerprintRules
    changes: ChangeRules
    events: EventRules = Field(default_factory=lambda: EventRules(version=0))
    inhibit: InhibitRules = Field(default_factory=lambda: InhibitRules(version=0))
    routes: RouteRules = Field(default_factory=lambda: RouteRules(version=0))
    templates: TemplateRules = Field(default_factory=lambda: TemplateRules(version=0))

    def versions(self) -> str:
        return (
            f"severity v{self.severity.version}, correlation v{self.correlation.version}, "
            f"lifecycle v{self.lifecycle.version}, fingerprint v{self.fingerprint.version}, "
            f"changes v{self.changes.version}, events v{self.events.version}, "
            f"inhibit v{self.inhibit.version}, routes v{self.routes.version}, "
            f"templates v{self.templates.version}"
        )


def default_rules_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "ops" / "rules"


RULE_MODELS: tuple[tuple[str, type[_Frozen]], ...] = (
    ("severity", SeverityRules),
    ("correlation", CorrelationRules),
    ("lifecycle", LifecycleRules),
    ("fingerprint", FingerprintRules),
    ("changes", ChangeRules),
    ("events", EventRules),
    ("inhibit", InhibitRules),
    ("routes", RouteRules),
    ("templates", TemplateRules),
)
RULE_FILES = tuple(f"{name}.toml" for name, _ in RULE_MODELS)


def rule_texts(directory: Path | None = None) -> dict[str, str]:
    """file name -> text of every rule file of a directory (RuleError when one is missing)."""
    directory = directory or default_rules_dir()
    out = {}
    for file in RULE_FILES:
        path = directory / file
        try:
            out[file] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RuleError(f"rule file {path} is missing") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(f"rule file {path}: {exc}") from None
    return out


def rules_from_texts(texts: dict[str, str], origin: str = "") -> Rules:
    """Validate a complete set of rule files given as texts; RuleError names the file and field
    at fault (origin: where they came from, e.g. a directory or a rule set on the rules topic)."""
    parts: dict[str, object] = {}
    for name, model in RULE_MODELS:
        file = f"{name}.toml"
        where = f"{origin.rstrip('/')}/{file}" if origin else file
        if file not in texts:
            raise RuleError(f"rule file {where} is missing")
        try:
            data = tomllib.loads(texts[file])
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{where}: not valid TOML: {exc}") from None
        try:
            parts[name] = model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise RuleError(f"{where}: {problems}") from None
    return Rules.model_validate(parts)


def load_rules(directory: Path | None = None) -> Rules:
    """Read and validate every rule file; RuleError names the file and field at fault."""
    directory = directory or default_rules_dir()
    return rules_from_texts(rule_texts(directory), str(directory))
