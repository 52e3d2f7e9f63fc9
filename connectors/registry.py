"""Explicit name -> implementation tables for sources and sinks (no discovery by folder name)."""

from __future__ import annotations

from connectors.sources.alertmanager.source import SOURCE as ALERTMANAGER
from connectors.sources.base import WebhookSource

WEBHOOK_SOURCES: dict[str, WebhookSource] = {
    ALERTMANAGER.name: ALERTMANAGER,
}

SINKS: tuple[str, ...] = ("servicenow",)
