"""Pure mapping of a PagerDuty Events API v2 event (trigger / acknowledge / resolve) to an Alert."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.sources.alertmanager.mapping import PayloadError, problems_of
from streams.core.models import Alert, AlertSource, AlertStatus
from streams.core.timeutil import parse_rfc3339, zone_of_text


class PDPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: str = Field(min_length=1, max_length=1024)
    source: str = Field(min_length=1)
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: str | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(None, alias="class")
    custom_details: Any = None


class PDEvent(BaseModel):
    """The Events API v2 body (developer.pagerduty.com: Events API v2 Overview, Send an Alert Event)."""

    model_config = ConfigDict(extra="allow")
    routing_key: str = Field(min_length=1)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str | None = Field(None, max_length=255)
    payload: PDPayload | None = None
    client: str | None = None
    client_url: str | None = None

    @model_validator(mode="after")
    def _required_per_action(self) -> PDEvent:
        if self.event_action == "trigger" and self.payload is None:
            raise ValueError("payload is required for a trigger event")
        if self.event_action != "trigger" and not self.dedup_key:
            raise ValueError(f"dedup_key is required for a {self.event_action} event")
        return self


def derived_dedup_key(event: PDEvent) -> str:
    """A stable dedup key for a trigger sent without one (PagerDuty makes a random one; ours repeats)."""
    p = event.payload
    assert p is not None
    material = "|".join(
        [event.routing_key, p.source, p.summary, p.component or "", p.group or "", p.class_ or ""]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _flat(details: Any) -> dict[str, str]:
    if details is None:
        return {}
    if isinstance(details, dict):
        return {
            str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in details.items()
        }
    return {"details": details if isinstance(details, str) else json.dumps(details, sort_keys=True)}


def to_alerts(payload: Any, received_at: datetime) -> list[Alert]:
    """One Alert; the routing key (an integration secret) is never copied into it."""
    try:
        event = PDEvent.model_validate(payload)
    except ValidationError as exc:
        raise PayloadError(problems_of(exc)) from None
    p = event.payload
    fingerprint = event.dedup_key or derived_dedup_key(event)
    labels: dict[str, str] = {"alertname": (p.class_ if p and p.class_ else "pagerduty_event")}
    annotations: dict[str, str] = {"pagerduty_event_action": event.event_action}
    starts_at = received_at
    if p is not None:
        labels.update(
            {k: v for k, v in (("host", p.source), ("component", p.component), ("group", p.group)) if v}
        )
        annotations.update(_flat(p.custom_details))
        if p.timestamp is not None:
            try:
                starts_at = parse_rfc3339(p.timestamp, "payload.timestamp")
            except ValueError as exc:
                raise PayloadError([str(exc)]) from None
    return [
        Alert(
            fingerprint=fingerprint,
            source=AlertSource.PAGERDUTY,
            source_instance=event.client or "",
            # acknowledge means a person works on it: still firing, noted on the incident.
            status=AlertStatus.RESOLVED if event.event_action == "resolve" else AlertStatus.FIRING,
            name=labels["alertname"],
            severity=p.severity if p else "",
            summary=p.summary if p else f"{event.event_action} for {fingerprint}",
            labels=labels,
            annotations=annotations,
            starts_at=starts_at,
            ends_at=received_at if event.event_action == "resolve" else None,
            generator_url=event.client_url,
            received_at=received_at,
            source_zone=zone_of_text(p.timestamp) if p else None,
        )
    ]


def routing_key(payload: Any) -> str | None:
    """The event's routing key: the integration's credential, checked like a bearer token."""
    key = payload.get("routing_key") if isinstance(payload, dict) else None
    return key if isinstance(key, str) and key else None


def response(alerts: list[Alert]) -> dict[str, Any]:
    """PagerDuty's success body, so its clients read back the dedup_key."""
    return {"status": "success", "message": "Event processed", "dedup_key": alerts[0].fingerprint}
