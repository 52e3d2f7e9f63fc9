"""Pure mapping of the Alertmanager v4 webhook payload to canonical Alerts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.core.models import Alert, AlertSource, AlertStatus, bounded_fingerprint, to_utc
from streams.core.timeutil import parse_rfc3339, parse_rfc3339_zoned

# Alertmanager's "not set" endsAt.
ZERO_TIME_PREFIX = "0001-01-01"

STATUS = {"firing": AlertStatus.FIRING, "resolved": AlertStatus.RESOLVED}

# Prometheus' label-set fingerprint (prometheus/common model.labelSetToFingerprint): FNV-1a 64
# over sorted name/value pairs, each followed by the 0xff separator byte.
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF


def labelset_fingerprint(labels: Mapping[str, str]) -> str:
    """The fingerprint Alertmanager reports for a label set, as 16 hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8"):
                h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class AMAlert(BaseModel):
    """One alert in the webhook payload."""

    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, v: dict[str, str]) -> dict[str, str]:
        if not v.get("alertname"):
            raise ValueError("labels must contain a non-empty alertname")
        return v


class AMWebhook(BaseModel):
    """The Alertmanager webhook body (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    model_config = ConfigDict(extra="allow")
    version: str

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != "4":
            raise ValueError(f"Alertmanager webhook version must be '4', not {v!r}")
        return v

    groupKey: str = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AMAlert] = Field(min_length=1)


class PayloadError(ValueError):
    """The payload is not a valid webhook; the message says what is wrong, field by field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def problems_of(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        out.append(f"{loc}: {err['msg']}")
    return out


def to_alerts(payload: Any, received_at: datetime) -> list[Alert]:
    """Every alert of one webhook as canonical Alerts; PayloadError if any part is invalid."""
    return webhook_alerts(AMWebhook, AlertSource.ALERTMANAGER, payload, received_at)


def webhook_alerts(
    model: type[AMWebhook], source: AlertSource, payload: Any, received_at: datetime
) -> list[Alert]:
    """Alerts of an Alertmanager-shaped webhook (Alertmanager itself, Grafana alerting)."""
    try:
        hook = model.model_validate(payload)
    except ValidationError as exc:
        raise PayloadError(problems_of(exc)) from None
    alerts: list[Alert] = []
    problems: list[str] = []
    for i, am in enumerate(hook.alerts):
        try:
            alerts.append(_to_alert(am, hook, received_at, source))
        except (ValueError, ValidationError) as exc:
            detail = "; ".join(problems_of(exc)) if isinstance(exc, ValidationError) else str(exc)
            problems.append(f"alerts.{i}: {detail}")
    if problems:
        raise PayloadError(problems)
    return alerts


def _to_alert(am: AMAlert, hook: AMWebhook, received_at: datetime, source: AlertSource) -> Alert:
    ends_at = None
    if am.endsAt and not am.endsAt.startswith(ZERO_TIME_PREFIX):
        ends_at = to_utc(parse_rfc3339(am.endsAt, "endsAt"))
    starts_at, zone = parse_rfc3339_zoned(am.startsAt, "startsAt")
    # The webhook was validated field by field (AMWebhook: string labels and annotations, a
    # non-empty alertname, RFC 3339 times), so the canonical Alert is built without validating
    # every field a second time (about a third of the gateway's mapping time): what Alert's types
    # would still do is done here (a bounded fingerprint, UTC times at millisecond precision).
    # tests/unit/test_alertmanager_mapping.py checks the result equals a validated Alert.
    return Alert.model_construct(
        fingerprint=bounded_fingerprint(am.fingerprint or labelset_fingerprint(am.labels)),
        source=source,
        source_instance=hook.externalURL,
        status=STATUS[am.status],
        name=am.labels["alertname"],
        severity=am.labels.get("severity", ""),
        summary=am.annotations.get("summary", am.annotations.get("message", "")),
        description=am.annotations.get("description", ""),
        labels=am.labels,
        annotations=am.annotations,
        starts_at=to_utc(starts_at),
        ends_at=ends_at,
        generator_url=am.generatorURL or None,
        received_at=to_utc(received_at),
        source_zone=zone,
    )
