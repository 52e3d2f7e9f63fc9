"""Pure mapping of a Datadog webhook (its template variables as JSON fields) to an Alert."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.sources.alertmanager.mapping import PayloadError, problems_of
from streams.core.models import Alert, AlertSource, AlertStatus

# $ALERT_TRANSITION values: which mean the monitor recovered.
FIRING_TRANSITIONS = {"Triggered", "Re-Triggered", "Warn", "Re-Warn", "No Data", "Re-No Data", "Renotify"}
RESOLVED_TRANSITIONS = {"Recovered"}


class DDWebhook(BaseModel):
    """Fields named after Datadog's variables ($EVENT_TITLE -> title, $AGGREG_KEY -> aggreg_key, ...)."""

    model_config = ConfigDict(extra="allow")
    title: str = Field(min_length=1)
    body: str = ""
    id: str = ""
    date: str | int | None = None
    last_updated: str | int | None = None
    event_type: str = ""
    alert_id: str = ""
    alert_cycle_key: str = ""
    alert_transition: str = ""
    alert_type: str = ""
    alert_priority: str = ""
    alert_metric: str = ""
    aggreg_key: str = ""
    hostname: str = ""
    tags: str = ""
    link: str = ""
    org: dict[str, Any] = Field(default_factory=dict)

    @field_validator("alert_transition")
    @classmethod
    def _known(cls, v: str) -> str:
        if v and v not in FIRING_TRANSITIONS | RESOLVED_TRANSITIONS:
            raise ValueError(f"unknown $ALERT_TRANSITION {v!r}")
        return v

    @model_validator(mode="after")
    def _identity(self) -> DDWebhook:
        if not (self.aggreg_key or self.alert_id):
            raise ValueError(
                "aggreg_key ($AGGREG_KEY) or alert_id ($ALERT_ID) is required to identify the alert"
            )
        return self


def _epoch(value: str | int | None, field: str, default: datetime) -> datetime:
    if value in (None, ""):
        return default
    text = str(value).strip()
    # ASCII digits only: str.isdigit() also says yes to "²" and other digits int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 15:
        raise PayloadError([f"{field}: {value!r} is not epoch milliseconds ($DATE)"])
    try:
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):
        raise PayloadError([f"{field}: {value!r} is outside the calendar (years 1 to 9999)"]) from None


def tags_to_labels(tags: str) -> dict[str, str]:
    """'env:prod,role:db,canary' -> {'env': 'prod', 'role': 'db', 'canary': 'true'}."""
    out: dict[str, str] = {}
    for tag in filter(None, (t.strip() for t in tags.split(","))):
        name, _, value = tag.partition(":")
        out[name] = value or "true"
    return out


def to_alerts(payload: Any, received_at: datetime) -> list[Alert]:
    try:
        hook = DDWebhook.model_validate(payload)
    except ValidationError as exc:
        raise PayloadError(problems_of(exc)) from None
    resolved = hook.alert_transition in RESOLVED_TRANSITIONS or hook.alert_type == "success"
    labels = tags_to_labels(hook.tags)
    labels["alertname"] = hook.alert_metric or f"datadog_monitor_{hook.alert_id or 'event'}"
    if hook.hostname:
        labels["host"] = hook.hostname
    if hook.alert_id:
        labels["monitor_id"] = hook.alert_id
    fingerprint = hook.aggreg_key or f"dd-{hook.alert_id}-{hook.hostname or 'all'}"
    starts_at = _epoch(hook.date, "date", received_at)
    return [
        Alert(
            fingerprint=fingerprint,
            source=AlertSource.DATADOG,
            source_instance=str(hook.org.get("name", "")),
            status=AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
            name=labels["alertname"],
            severity=hook.alert_priority or hook.alert_type,
            summary=hook.title,
            description=hook.body,
            labels=labels,
            annotations={"alert_transition": hook.alert_transition} if hook.alert_transition else {},
            starts_at=starts_at,
            ends_at=_epoch(hook.last_updated, "last_updated", received_at) if resolved else None,
            generator_url=hook.link or None,
            received_at=received_at,
        )
    ]
