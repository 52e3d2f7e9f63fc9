"""Pure mapping of canonical Alert JSON (one object, or {"alerts": [...]}) to Alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from connectors.sources.alertmanager.mapping import PayloadError, problems_of
from streams.core.models import Alert, AlertSource
from streams.core.timeutil import zone_of_text


def to_alerts(payload: Any, received_at: datetime) -> list[Alert]:
    """received_at is always the gateway's; source defaults to CANONICAL; naive timestamps are refused."""
    items = payload.get("alerts") if isinstance(payload, dict) and "alerts" in payload else [payload]
    if not isinstance(items, list) or not items:
        raise PayloadError(["alerts: must be a non-empty list of Alert objects"])
    alerts, problems = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"alerts.{i}: must be an object")
            continue
        data = {"source": AlertSource.CANONICAL.value, **item, "received_at": received_at}
        data.setdefault("source_zone", zone_of_text(item.get("starts_at")))
        try:
            alerts.append(Alert.model_validate(data))
        except ValidationError as exc:
            problems.extend(f"alerts.{i}.{p}" for p in problems_of(exc))
    if problems:
        raise PayloadError(problems)
    return alerts
