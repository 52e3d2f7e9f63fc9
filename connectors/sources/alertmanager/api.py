"""Alertmanager's own API for receiving alerts, `POST /api/v2/alerts`, so Prometheus, vmalert or
Grafana can point `alerting.alertmanagers` at the gateway as they would at an Alertmanager.

Follows Alertmanager's API v2 (api/v2/openapi.yaml, operation postAlerts; the handler
postAlertsHandler in api/v2/api.go):
- the body is `postableAlerts`: a JSON array of objects with `labels` (required, a label set),
  `annotations`, `startsAt`, `endsAt` (RFC 3339 date-times) and `generatorURL`;
- an empty `startsAt` becomes the time the alert arrived (or its `endsAt` when only that is set);
  an empty `endsAt` means still firing; an alert is firing while `endsAt` lies in the future and
  resolved once it has passed (Prometheus sends resolved alerts with `endsAt` = the time they
  resolved);
- labels with an empty value are removed (removeEmptyLabels), and an alert must keep at least one
  label and must not end before it starts (types.Alert.Validate);
- valid alerts are accepted even when others in the same body are not ("best effort"): the answer
  is then 400 with the problems as its body (BadRequest: a string), else 200 with no body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.sources.alertmanager.mapping import PayloadError, labelset_fingerprint, problems_of
from streams.core.models import Alert, AlertSource, AlertStatus, bounded_fingerprint, to_utc
from streams.core.timeutil import parse_rfc3339, zone_of_text

# Go's zero time, as a client may serialise "not set".
ZERO_TIME_PREFIX = "0001-01-01"


class PostableAlert(BaseModel):
    """One element of postableAlerts."""

    model_config = ConfigDict(extra="ignore")
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None


class PartialPayload(PayloadError):
    """Some alerts of the body are valid (alerts), others not (problems): the valid ones are
    published, and the answer is 400 naming the others (Alertmanager's best effort)."""

    def __init__(self, alerts: list[Alert], problems: list[str]) -> None:
        super().__init__(problems)
        self.alerts = alerts


def _time(text: str | None, field: str) -> datetime | None:
    if not text or text.startswith(ZERO_TIME_PREFIX):
        return None
    return to_utc(parse_rfc3339(text, field))


def _to_alert(raw: Any, received_at: datetime) -> Alert:
    try:
        posted = PostableAlert.model_validate(raw)
    except ValidationError as exc:
        raise ValueError("; ".join(problems_of(exc))) from None
    labels = {k: v for k, v in posted.labels.items() if v != ""}
    if not labels:
        raise ValueError("labels: at least one label pair required")
    now = to_utc(received_at)
    starts, ends = _time(posted.startsAt, "startsAt"), _time(posted.endsAt, "endsAt")
    if starts is None:
        starts = ends or now
    if ends is not None and ends < starts:
        raise ValueError("endsAt: before startsAt")
    firing = ends is None or ends > now
    name = labels.get("alertname") or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return Alert.model_validate(
        {
            "fingerprint": bounded_fingerprint(labelset_fingerprint(labels)),
            "source": AlertSource.ALERTMANAGER,
            "status": AlertStatus.FIRING if firing else AlertStatus.RESOLVED,
            "name": name[:250],
            "severity": labels.get("severity", ""),
            "summary": posted.annotations.get("summary", posted.annotations.get("message", "")),
            "description": posted.annotations.get("description", ""),
            "labels": labels,
            "annotations": posted.annotations,
            "starts_at": starts,
            "ends_at": None if firing else ends,
            "generator_url": posted.generatorURL or None,
            "received_at": now,
            "source_zone": zone_of_text(posted.startsAt) or zone_of_text(posted.endsAt),
        }
    )


def to_alerts(payload: Any, received_at: datetime) -> list[Alert]:
    """Every valid alert of a postableAlerts body; PartialPayload when some are not (with the valid
    ones), PayloadError when none is or the body is not an array."""
    if not isinstance(payload, list):
        raise PayloadError(["(body): must be an array of alerts (postableAlerts)"])
    alerts: list[Alert] = []
    problems: list[str] = []
    for i, raw in enumerate(payload):
        try:
            alerts.append(_to_alert(raw, received_at))
        except (ValueError, ValidationError) as exc:
            detail = "; ".join(problems_of(exc)) if isinstance(exc, ValidationError) else str(exc)
            problems.append(f"{i}: {detail}")
    if problems and alerts:
        raise PartialPayload(alerts, problems)
    if problems:
        raise PayloadError(problems)
    return alerts


def respond(_alerts: list[Alert]) -> None:
    """Alertmanager answers a successful postAlerts with 200 and no body."""
    return None
