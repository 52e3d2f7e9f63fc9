"""Grafana, PagerDuty Events v2, Datadog and canonical JSON payloads to canonical Alerts."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.sources.alertmanager.mapping import PayloadError
from connectors.sources.canonical.mapping import to_alerts as canonical
from connectors.sources.datadog.mapping import tags_to_labels
from connectors.sources.datadog.mapping import to_alerts as datadog
from connectors.sources.grafana.mapping import signature_problem
from connectors.sources.grafana.mapping import to_alerts as grafana
from connectors.sources.pagerduty.mapping import response as pd_response
from connectors.sources.pagerduty.mapping import to_alerts as pagerduty
from streams.core.models import AlertSource, AlertStatus

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


# --- Grafana ---------------------------------------------------------------------------------


def test_grafana_webhook_maps_with_grafanas_fingerprint() -> None:
    (a,) = grafana(load("grafana/firing.json"), NOW)
    assert a.source is AlertSource.GRAFANA and a.status is AlertStatus.FIRING
    assert a.fingerprint == "57c6d9296de2ad39" and a.name == "HighMemory" and a.severity == "critical"
    assert a.summary == "Memory above 95% on db-1" and a.source_instance == "http://grafana.example:3000/"


def test_grafana_payload_with_the_wrong_version_is_refused() -> None:
    p = load("grafana/firing.json")
    p["version"] = "4"
    with pytest.raises(PayloadError, match="Grafana webhook version must be '1'"):
        grafana(p, NOW)


def sign(secret: bytes, data: bytes) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def test_grafana_hmac_over_the_body_and_over_timestamp_colon_body() -> None:
    body, secret, h = b'{"a":1}', b"s3cret", "X-Grafana-Alerting-Signature"
    assert signature_problem(secret, body, {h: sign(secret, body)}, h, None, 0, 300) is None
    assert (
        signature_problem(secret, body, {h: sign(b"other", body)}, h, None, 0, 300)
        == "signature does not match the body"
    )
    assert signature_problem(secret, body, {}, h, None, 0, 300) == f"missing {h} header"
    ts_h = "X-Grafana-Alerting-Signature-Timestamp"
    signed = {h: sign(secret, b"1000:" + body), ts_h: "1000"}
    assert signature_problem(secret, body, signed, h, ts_h, 1100, 300) is None
    assert "replay" in (signature_problem(secret, body, signed, h, ts_h, 2000, 300) or "")
    assert (
        signature_problem(secret, body, {h: sign(secret, body), ts_h: "1000"}, h, ts_h, 1000, 300)
        == "signature does not match the body"
    )


# --- PagerDuty -------------------------------------------------------------------------------


def test_pagerduty_trigger_maps_and_keeps_the_routing_key_out() -> None:
    (a,) = pagerduty(load("pagerduty/trigger.json"), NOW)
    assert a.source is AlertSource.PAGERDUTY and a.status is AlertStatus.FIRING
    assert a.fingerprint == "srv01/mysql-disk" and a.severity == "critical" and a.name == "disk"
    assert a.labels == {
        "alertname": "disk",
        "host": "prod-datapipe03.example.com",
        "component": "mysql",
        "group": "prod-datapipe",
    }
    assert a.annotations["load avg"] == "0.75" and a.annotations["pagerduty_event_action"] == "trigger"
    assert a.starts_at == datetime(2026, 11, 27, 8, 42, 58, 315000, tzinfo=UTC)
    assert "R015PTESTKEY" not in json.dumps(a.model_dump(mode="json"))
    assert pd_response([a]) == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": "srv01/mysql-disk",
    }


def test_pagerduty_acknowledge_and_resolve_share_the_dedup_key() -> None:
    (ack,) = pagerduty(load("pagerduty/acknowledge.json"), NOW)
    (res,) = pagerduty(load("pagerduty/resolve.json"), NOW)
    assert ack.fingerprint == res.fingerprint == "srv01/mysql-disk"
    assert ack.status is AlertStatus.FIRING and ack.annotations["pagerduty_event_action"] == "acknowledge"
    assert res.status is AlertStatus.RESOLVED and res.ends_at == NOW


def test_a_trigger_without_dedup_key_gets_a_stable_one() -> None:
    p = load("pagerduty/trigger.json")
    del p["dedup_key"]
    first, second = pagerduty(p, NOW)[0], pagerduty(copy.deepcopy(p), NOW)[0]
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 32


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda p: p.update(event_action="escalate"), "event_action"),
        (lambda p: p["payload"].update(severity="fatal"), "payload.severity"),
        (lambda p: p.pop("routing_key"), "routing_key"),
        (lambda p: p.pop("payload"), "payload is required for a trigger event"),
        (
            lambda p: (p.update(event_action="resolve"), p.pop("dedup_key")),
            "dedup_key is required for a resolve",
        ),
        (lambda p: p["payload"].update(timestamp="soon"), "payload.timestamp"),
    ],
)
def test_invalid_pagerduty_events_are_refused(mutate: Any, problem: str) -> None:
    p = load("pagerduty/trigger.json")
    mutate(p)
    with pytest.raises(PayloadError, match=problem):
        pagerduty(p, NOW)


# --- Datadog ---------------------------------------------------------------------------------


def test_datadog_triggered_maps_with_the_aggregation_key_as_fingerprint() -> None:
    (a,) = datadog(load("datadog/triggered.json"), NOW)
    assert a.source is AlertSource.DATADOG and a.status is AlertStatus.FIRING
    assert a.fingerprint == "9bd4ac313a4d1e8fae2482df7b77628" and a.severity == "P2"
    assert a.labels["host"] == "web-2" and a.labels["service"] == "checkout" and a.labels["monitor"] == "true"
    assert a.name == "system.load.1" and a.starts_at == datetime.fromtimestamp(1795767000, UTC)


def test_datadog_recovered_resolves_the_same_fingerprint() -> None:
    (a,) = datadog(load("datadog/recovered.json"), NOW)
    assert a.status is AlertStatus.RESOLVED and a.fingerprint == "9bd4ac313a4d1e8fae2482df7b77628"
    assert a.ends_at == datetime.fromtimestamp(1795767600, UTC)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda p: p.update(alert_transition="Exploded"), "unknown \\$ALERT_TRANSITION"),
        (lambda p: (p.pop("aggreg_key"), p.pop("alert_id")), "aggreg_key"),
        (lambda p: p.update(date="yesterday"), "epoch milliseconds"),
        (lambda p: p.pop("title"), "title"),
    ],
)
def test_invalid_datadog_payloads_are_refused(mutate: Any, problem: str) -> None:
    p = load("datadog/triggered.json")
    mutate(p)
    with pytest.raises(PayloadError, match=problem):
        datadog(p, NOW)


def test_datadog_tags_become_labels() -> None:
    assert tags_to_labels("env:prod, role:db,canary,") == {"env": "prod", "role": "db", "canary": "true"}


# --- canonical -------------------------------------------------------------------------------


def test_canonical_json_takes_the_gateways_receive_time_and_converts_to_utc() -> None:
    (a,) = canonical(load("canonical/alerts.json"), NOW)
    assert a.source is AlertSource.CANONICAL and a.received_at == NOW
    assert a.starts_at == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def test_canonical_json_refuses_naive_timestamps_and_unknown_fields() -> None:
    p = load("canonical/alerts.json")
    p["alerts"][0]["starts_at"] = "2026-11-27T03:00:00"
    p["alerts"][0]["colour"] = "red"
    with pytest.raises(PayloadError) as info:
        canonical(p, NOW)
    text = str(info.value)
    assert "alerts.0.starts_at" in text and "timezone" in text and "alerts.0.colour" in text
