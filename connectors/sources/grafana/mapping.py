"""Pure mapping of Grafana alerting's webhook payload (Alertmanager-shaped, version "1") to Alerts."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import field_validator

from connectors.sources.alertmanager.mapping import AMWebhook, webhook_alerts
from streams.core.models import Alert, AlertSource


class GrafanaWebhook(AMWebhook):
    """Grafana's webhook body: Alertmanager's fields plus orgId, title, state, message."""

    orgId: int | None = None
    title: str = ""
    state: str = ""
    message: str = ""

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != "1":
            raise ValueError(f"Grafana webhook version must be '1', not {v!r}")
        return v


def to_alerts(payload: Any, received_at: datetime) -> list[Alert]:
    """Every alert of one Grafana webhook; fingerprints are Grafana's own (label-set based)."""
    return webhook_alerts(GrafanaWebhook, AlertSource.GRAFANA, payload, received_at)


def signature_problem(
    secret: bytes,
    body: bytes,
    headers: Mapping[str, str],
    header: str,
    timestamp_header: str | None,
    now: float,
    max_skew: float,
) -> str | None:
    """None when Grafana's HMAC-SHA256 signature matches; otherwise what is wrong.

    Grafana signs the raw body, or "<timestamp>:<body>" when a timestamp header is configured,
    and sends the lower-case hex digest in the signature header (X-Grafana-Alerting-Signature).
    """
    given = headers.get(header, "").strip()
    if not given:
        return f"missing {header} header"
    if not given.isascii():
        return f"{header} is not a hex digest"
    signed = body
    if timestamp_header:
        ts = headers.get(timestamp_header, "").strip()
        if not (ts.isascii() and ts.isdigit()) or len(ts) > 12:
            return f"missing or invalid {timestamp_header} header"
        if abs(now - int(ts)) > max_skew:
            return f"{timestamp_header} is more than {max_skew:.0f}s away from now (replay?)"
        signed = ts.encode() + b":" + body
    expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        return "signature does not match the body"
    return None
