"""AlertToIncidentStage: turns one canonical Alert into the IncidentCommand for its fingerprint."""

from __future__ import annotations

import uuid

from streams.core.models import Alert, AlertStatus, IncidentAction, IncidentCommand
from streams.stages.base import Ctx

# Namespace for deterministic command ids: the same alert always yields the same command id,
# so a redelivered alert produces an identical command (idempotent downstream).
COMMAND_NAMESPACE = uuid.UUID("5b0e7c1e-3f57-4b0f-9a53-6d1d2f1f0a11")
CORRELATION_PREFIX = "itsmp-"


def correlation_id(fingerprint: str) -> str:
    """The ITSM correlation id of the incident for an alert fingerprint."""
    return CORRELATION_PREFIX + fingerprint


class AlertToIncidentStage:
    """FIRING opens (or, downstream, updates) the incident; RESOLVED resolves it."""

    name = "alert_to_incident"

    def __call__(self, alert: Alert, ctx: Ctx) -> IncidentCommand:
        firing = alert.status is AlertStatus.FIRING
        title = alert.summary or alert.name
        host = alert.labels.get("instance") or alert.labels.get("host") or ""
        where = f" on {host}" if host and host.split(":")[0] not in title else ""
        short = f"[{alert.severity or 'unknown'}] {title}{where}"
        identity = "|".join(
            (alert.fingerprint, alert.status, alert.starts_at.isoformat(), alert.received_at.isoformat())
        )
        lines = [alert.description or alert.summary or alert.name, ""]
        lines += [f"{k}={v}" for k, v in sorted(alert.labels.items())]
        if alert.generator_url:
            lines += ["", f"Source: {alert.generator_url}"]
        return IncidentCommand(
            command_id=str(uuid.uuid5(COMMAND_NAMESPACE, identity)),
            correlation_id=correlation_id(alert.fingerprint),
            action=IncidentAction.OPEN if firing else IncidentAction.RESOLVE,
            short_description=short[:160],
            description="\n".join(lines),
            ci_id=alert.labels.get("ci_id"),
            service=alert.labels.get("service"),
            alert_fingerprints=[alert.fingerprint],
            source=alert.source.value,
            labels=dict(alert.labels),
            resolution_note=None
            if firing
            else f"Alert {alert.name} resolved at source ({(alert.ends_at or ctx.now).isoformat()}).",
            issued_at=ctx.now,
        )
