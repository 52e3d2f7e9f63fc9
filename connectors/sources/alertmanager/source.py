"""The Alertmanager webhook source as the gateway mounts it."""

from connectors.sources.alertmanager.mapping import to_alerts
from connectors.sources.base import WebhookSource

SOURCE = WebhookSource(
    "alertmanager",
    to_alerts,
    "Prometheus Alertmanager webhook_config receiver, payload version 4.",
)
