"""Per-target incident templates (ops/rules/templates.toml): the title and body each ITSM shows
when an incident opens, rendered from the alert, its annotations and its CI with Jinja2's
SandboxedEnvironment (a template reaches no Python internals, calls no unsafe method, and an
undefined name is an error, not an empty string).

The worker renders them (it holds the alert and the CI); the results travel on the OPEN command
as target_fields[<target>]["short_description"] and ["description"], which each sink writes
instead of the default text. A template that fails on an alert is a TemplateFault: the worker
dead-letters the alert with the reason instead of opening an incident with a broken text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from streams.core.models import Alert, ConfigurationItem
from streams.core.rules import Display
from streams.core.timeutil import localized

FIELDS = ("short_description", "description")
LIMITS = {"short_description": 160, "description": 32_000}  # what an ITSM title and body hold


class TemplateFault(ValueError):
    """A template could not be rendered for an alert (the reason names the target and field)."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(message)
        self.target = target


def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
    )


def compile_all(texts: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, jinja2.Template]]:
    """target -> field -> compiled template; ValueError names the template that does not parse."""
    env = environment()
    out: dict[str, dict[str, jinja2.Template]] = {}
    for target, fields in texts.items():
        for name, text in fields.items():
            try:
                out.setdefault(target, {})[name] = env.from_string(text)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"{target}.{name}: line {exc.lineno}: {exc.message}") from None
    return out


def context(alert: Alert, ci: ConfigurationItem | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees: alert (name, severity, summary, description, labels, annotations,
    source, fingerprint, starts_at, generator_url), ci (None when unknown: id, name, ci_class,
    owner_group, service, environment, criticality, hostname, attributes such as tier or
    location), and the incident's correlation_id, impact, urgency and route."""
    return {
        "alert": {
            "name": alert.name,
            "severity": alert.severity,
            "summary": alert.summary,
            "description": alert.description,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "source": alert.source.value,
            "fingerprint": alert.fingerprint,
            "starts_at": alert.starts_at.isoformat(),
            "source_zone": alert.source_zone,
            "generator_url": alert.generator_url,
        },
        "ci": None
        if ci is None
        else {
            "id": ci.ci_id,
            "name": ci.name,
            "ci_class": ci.ci_class,
            "owner_group": ci.owner_group,
            "service": ci.service,
            "environment": ci.environment,
            "criticality": ci.criticality.value,
            "hostname": ci.hostname,
            "attributes": dict(ci.attributes),
        },
        **extra,
    }


def for_target(ctx: dict[str, Any], display: Display | None) -> dict[str, Any]:
    """The context as one target sees it: alert.starts_at_local, and local(time) to show any RFC
    3339 time (or datetime) in its zone and locale (UTC and en_US when it has no display)."""
    zone, locale = (display.time_zone, display.locale) if display else ("UTC", "en_US")

    def local(value: Any) -> str:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return localized(moment, zone, locale)

    alert = dict(ctx["alert"])
    alert["starts_at_local"] = local(alert["starts_at"])
    return {**ctx, "alert": alert, "local": local}


def render(
    templates: Mapping[str, Mapping[str, jinja2.Template]],
    targets: list[str] | tuple[str, ...],
    ctx: dict[str, Any],
    display: Mapping[str, Display] | None = None,
) -> dict[str, dict[str, str]]:
    """target -> field -> text, for the targets the incident goes to (every templated target when
    it goes to every sink), times in each target's zone and locale; TemplateFault names the
    target, field and reason."""
    out: dict[str, dict[str, str]] = {}
    for target, fields in templates.items():
        if targets and target not in targets:
            continue
        seen = for_target(ctx, (display or {}).get(target))
        for name, template in fields.items():
            try:
                text = template.render(seen).strip()
            except jinja2.TemplateError as exc:  # undefined names, sandbox refusals, bad filters
                raise TemplateFault(
                    target, f"template {target}.{name}: {type(exc).__name__}: {exc}"
                ) from None
            except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
                raise TemplateFault(
                    target, f"template {target}.{name}: {type(exc).__name__}: {exc}"
                ) from None
            if not text:
                raise TemplateFault(target, f"template {target}.{name}: rendered to nothing")
            out.setdefault(target, {})[name] = text[: LIMITS.get(name, 32_000)]
    return out
