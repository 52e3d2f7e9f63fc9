"""Explicit name -> implementation tables for sources and sinks (no discovery by folder name)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from connectors.sources.alertmanager.source import SOURCE as ALERTMANAGER
from connectors.sources.base import WebhookSource
from connectors.sources.canonical.mapping import to_alerts as canonical_alerts
from connectors.sources.datadog.mapping import to_alerts as datadog_alerts
from connectors.sources.grafana.mapping import signature_problem
from connectors.sources.grafana.mapping import to_alerts as grafana_alerts
from connectors.sources.pagerduty.mapping import response as pagerduty_response
from connectors.sources.pagerduty.mapping import to_alerts as pagerduty_alerts
from streams.core.settings import Settings

SINKS: tuple[str, ...] = ("servicenow", "jira", "rt", "webhook")


def webhook_sources(settings: Settings) -> dict[str, WebhookSource]:
    """Every webhook the gateway serves, configured from settings (e.g. Grafana's HMAC secret)."""
    grafana_verify = None
    if settings.grafana_hmac_secret is not None:
        secret = settings.grafana_hmac_secret.get_secret_value().encode()

        def grafana_verify(body: bytes, headers: Mapping[str, str]) -> str | None:
            return signature_problem(
                secret,
                body,
                headers,
                settings.grafana_hmac_header,
                settings.grafana_hmac_timestamp_header,
                time.time(),
                settings.grafana_hmac_max_skew_seconds,
            )

    sources = [
        ALERTMANAGER,
        WebhookSource(
            "grafana",
            grafana_alerts,
            "Grafana alerting webhook contact point (optional HMAC).",
            verify=grafana_verify,
        ),
        WebhookSource(
            "pagerduty", pagerduty_alerts, "PagerDuty Events API v2 event body.", respond=pagerduty_response
        ),
        WebhookSource("datadog", datadog_alerts, "Datadog webhook with the README's payload template."),
        WebhookSource("canonical", canonical_alerts, 'Canonical Alert JSON, one or {"alerts": [...]}.'),
    ]
    return {s.name: s for s in sources}
