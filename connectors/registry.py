"""Explicit name -> implementation tables for sources and sinks (no discovery by folder name)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from connectors.sources.alertmanager import api as am_api
from connectors.sources.alertmanager.source import SOURCE as ALERTMANAGER
from connectors.sources.base import WebhookSource
from connectors.sources.canonical.mapping import to_alerts as canonical_alerts
from connectors.sources.datadog.mapping import to_alerts as datadog_alerts
from connectors.sources.grafana.mapping import signature_problem
from connectors.sources.grafana.mapping import to_alerts as grafana_alerts
from connectors.sources.pagerduty.mapping import response as pagerduty_response
from connectors.sources.pagerduty.mapping import routing_key as pagerduty_routing_key
from connectors.sources.pagerduty.mapping import to_alerts as pagerduty_alerts
from streams.core.settings import Settings


def _servicenow(settings: Settings, policy: Any, limiter: Any, known: Any) -> Any:
    from connectors.sinks.servicenow.client import ServiceNowClient
    from connectors.sinks.servicenow.config import ServiceNowConfig
    from connectors.sinks.servicenow.sink import ServiceNowSink

    client = ServiceNowClient(ServiceNowConfig.from_settings(settings), policy, limiter=limiter)
    from connectors.identities import IdentitiesFile

    try:
        identities = IdentitiesFile(settings.identities_file)
    except ValueError as exc:
        raise ValueError(f"{exc} (ITSM_IDENTITIES_FILE)") from None
    return ServiceNowSink(
        client, resolved_policy=settings.sink_resolved_policy, known=known, identities=identities
    )


def _jira(settings: Settings, policy: Any, limiter: Any, known: Any) -> Any:
    from connectors.sinks.jira.config import JiraConfig
    from connectors.sinks.jira.sink import JiraSink

    config = JiraConfig.from_settings(settings)
    return JiraSink(config, policy, limiter, resolved_policy=settings.sink_resolved_policy, known=known)


def _rt(settings: Settings, policy: Any, limiter: Any, known: Any) -> Any:
    from connectors.sinks.rt.config import RTConfig
    from connectors.sinks.rt.sink import RTSink

    config = RTConfig.from_settings(settings)
    return RTSink(config, policy, limiter, resolved_policy=settings.sink_resolved_policy, known=known)


def _webhook(settings: Settings, policy: Any, limiter: Any, known: Any) -> Any:
    from connectors.sinks.webhook.config import WebhookConfig
    from connectors.sinks.webhook.sink import WebhookSink

    return WebhookSink(WebhookConfig.from_settings(settings), policy, limiter)


SinkFactory = Callable[[Settings, Any, Any, Any], Any]

# Every ITSM target, by the name `itsmctl sink NAME` takes (modules are imported when built).
SINK_FACTORIES: dict[str, SinkFactory] = {
    "servicenow": _servicenow,
    "jira": _jira,
    "rt": _rt,
    "webhook": _webhook,
}
SINKS: tuple[str, ...] = tuple(SINK_FACTORIES)


def build_sink(target: str, settings: Settings, policy: Any, limiter: Any, known: Any = None) -> Any:
    """The sink named target, configured from settings; ValueError if its configuration is incomplete."""
    try:
        factory = SINK_FACTORIES[target]
    except KeyError:
        raise ValueError(f"unknown sink {target!r} (known: {', '.join(SINKS)})") from None
    return factory(settings, policy, limiter, known)


def preflight(target: str, settings: Settings) -> list[Any]:
    """The preflight findings of an ITSM target (connectors/preflight.py); ValueError when its
    configuration is incomplete, Unreachable when it does not answer."""
    if target == "servicenow":
        from connectors.sinks.servicenow.config import ServiceNowConfig
        from connectors.sinks.servicenow.preflight import check as servicenow

        return servicenow(ServiceNowConfig.from_settings(settings))
    if target == "jira":
        from connectors.sinks.jira.config import JiraConfig
        from connectors.sinks.jira.preflight import check as jira

        return jira(JiraConfig.from_settings(settings))
    if target == "rt":
        from connectors.sinks.rt.config import RTConfig
        from connectors.sinks.rt.preflight import check as rt

        return rt(RTConfig.from_settings(settings))
    return []  # the webhook sink: its receiver is ours to define, nothing to check


INCIDENT_TARGETS = ("servicenow", "jira", "rt")


def incident_reader(target: str, settings: Settings, policy: Any) -> Any:
    """The reader of the incidents the pipeline opened in target (connectors/sources/incidents);
    ValueError when its configuration is incomplete."""
    if target == "servicenow":
        from connectors.sinks.servicenow.client import ServiceNowClient
        from connectors.sinks.servicenow.config import ServiceNowConfig
        from connectors.sources.incidents.servicenow import ServiceNowIncidents

        config = ServiceNowConfig.from_settings(settings)
        return ServiceNowIncidents(ServiceNowClient(config, policy, target="servicenow-incidents"))
    if target == "jira":
        from connectors.sinks.jira.config import JiraConfig
        from connectors.sources.incidents.jira import JiraIncidents

        return JiraIncidents(JiraConfig.from_settings(settings), policy)
    if target == "rt":
        from connectors.sinks.rt.config import RTConfig
        from connectors.sources.incidents.rt import RTIncidents

        return RTIncidents(RTConfig.from_settings(settings), policy)
    raise ValueError(f"no incident reader for {target!r} (known: {', '.join(INCIDENT_TARGETS)})")


def webhook_sources(settings: Settings) -> dict[str, WebhookSource]:
    """Every webhook the gateway serves, configured from settings (e.g. Grafana's HMAC secret)."""
    grafana_verify = None
    if settings.grafana_hmac_secret is not None:
        secret = settings.grafana_hmac_secret  # read per request: a FileSecret follows its file

        def grafana_verify(body: bytes, headers: Mapping[str, str]) -> str | None:
            return signature_problem(
                secret.get_secret_value().encode(),
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
            "pagerduty",
            pagerduty_alerts,
            "PagerDuty Events API v2 event body; its routing_key is the integration's token.",
            respond=pagerduty_response,
            # A PagerDuty client sends no Authorization header: its routing key is its credential.
            credential=pagerduty_routing_key,
        ),
        WebhookSource("datadog", datadog_alerts, "Datadog webhook with the README's payload template."),
        WebhookSource("canonical", canonical_alerts, 'Canonical Alert JSON, one or {"alerts": [...]}.'),
        WebhookSource(
            "alertmanager-api",
            am_api.to_alerts,
            "Alertmanager's own API for alerts (a JSON array of postableAlert), so Prometheus, vmalert "
            "or Grafana send here as to an Alertmanager.",
            respond=am_api.respond,
            accepted=200,
            # Alertmanager's BadRequest body is a string.
            error_body=lambda message, problems: "; ".join(problems or [message]),
            route="/api/v2/alerts",
        ),
    ]
    return {s.name: s for s in sources}
