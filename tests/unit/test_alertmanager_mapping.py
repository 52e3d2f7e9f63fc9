"""Mapping of the Alertmanager v4 webhook to canonical Alerts, on sample payloads kept under tests/data."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sources.alertmanager.mapping import PayloadError, labelset_fingerprint, to_alerts
from streams.core.models import Alert, AlertSource, AlertStatus

DATA = Path(__file__).resolve().parents[1] / "data" / "alertmanager"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def payload(name: str) -> dict[str, Any]:
    return dict(json.loads((DATA / name).read_text()))


def test_labelset_fingerprint_matches_prometheus_common_vectors() -> None:
    # prometheus/common model/signature_test.go (TestLabelsToSignature / empty label set).
    assert (
        int(labelset_fingerprint({"name": "garland, briggs", "fear": "love is not enough"}), 16)
        == 5799056148416392346
    )
    assert int(labelset_fingerprint({}), 16) == 14695981039346656037


def test_a_group_of_firing_alerts_maps_field_by_field() -> None:
    alerts = to_alerts(payload("highcpu-group-firing.json"), NOW)
    assert len(alerts) == 3
    first = alerts[0]
    assert first.source is AlertSource.ALERTMANAGER
    assert first.status is AlertStatus.FIRING
    assert first.name == "HighCPU"
    assert first.severity == "warning"
    assert first.summary == "CPU above 90% on web-1"
    assert first.description == "5m average CPU busy above 90%."
    assert first.labels["instance"] == "web-1:9100"
    assert first.source_instance == "http://alertmanager.example:9093"
    # Go's nanoseconds are cut to the millisecond the Avro contract keeps.
    assert first.starts_at == datetime(2026, 11, 27, 8, 0, 0, 123000, tzinfo=UTC)
    assert first.ends_at is None  # 0001-01-01T00:00:00Z means "not set"
    assert first.received_at == NOW
    assert first.fingerprint == labelset_fingerprint(first.labels)


def test_a_resolved_alert_keeps_its_end_time() -> None:
    (alert,) = to_alerts(payload("highcpu-resolved.json"), NOW)
    assert alert.status is AlertStatus.RESOLVED
    assert alert.ends_at == datetime(2026, 11, 27, 8, 9, tzinfo=UTC)


def test_missing_fingerprint_is_computed_and_offsets_become_utc() -> None:
    alerts = to_alerts(payload("latency-no-fingerprint-offset-time.json"), NOW)
    assert [a.fingerprint for a in alerts] == [labelset_fingerprint(a.labels) for a in alerts]
    assert alerts[0].starts_at == datetime(2026, 11, 27, 7, 5, tzinfo=UTC)  # 08:05+01:00


def test_the_same_alert_from_two_alertmanagers_of_an_ha_pair_has_one_fingerprint() -> None:
    a = payload("highcpu-group-firing.json")
    b = copy.deepcopy(a)
    b["externalURL"] = "http://alertmanager-2.example:9093"
    fa, fb = to_alerts(a, NOW)[0], to_alerts(b, NOW)[0]
    assert fa.fingerprint == fb.fingerprint and fa.source_instance != fb.source_instance


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p.pop("alerts"), "alerts: Field required"),
        (lambda p: p.update(alerts=[]), "alerts: List should have at least 1 item"),
        (lambda p: p["alerts"][0].pop("startsAt"), "alerts.0.startsAt: Field required"),
        (lambda p: p["alerts"][0].update(status="pending"), "alerts.0.status"),
        (lambda p: p["alerts"][0]["labels"].pop("alertname"), "alertname"),
        (
            lambda p: p["alerts"][1].update(startsAt="yesterday"),
            "alerts.1: startsAt: 'yesterday' is not an RFC 3339",
        ),
        (lambda p: p["alerts"][2].update(startsAt="2026-11-27T08:00:00"), "has no time zone offset"),
    ],
    ids=[
        "version",
        "no-alerts",
        "empty-alerts",
        "no-startsAt",
        "bad-status",
        "no-alertname",
        "bad-time",
        "naive-time",
    ],
)
def test_malformed_payloads_are_refused_with_what_is_wrong(mutate: Any, problem: str) -> None:
    p = payload("highcpu-group-firing.json")
    mutate(p)
    with pytest.raises(PayloadError) as info:
        to_alerts(p, NOW)
    assert problem in str(info.value)


def test_not_a_json_object_is_refused() -> None:
    with pytest.raises(PayloadError, match="Input should be a valid dictionary"):
        to_alerts(["not", "an", "object"], NOW)


@given(
    labels=st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=20), max_size=5),
    fingerprint=st.one_of(st.none(), st.text(min_size=1, max_size=120)),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
    micros=st.integers(min_value=0, max_value=999_999),
    resolved=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_the_unvalidated_construction_equals_a_validated_alert(
    labels: dict[str, str], fingerprint: str | None, offset_minutes: int, micros: int, resolved: bool
) -> None:
    """The mapping builds Alerts without validating them again (a third of the gateway's mapping
    time): every alert it builds must be exactly the Alert that validation would make."""
    sign, minutes = ("+" if offset_minutes >= 0 else "-"), abs(offset_minutes)
    stamp = f"2026-11-27T08:00:00.{micros:06d}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    body = payload("highcpu-group-firing.json")
    am = body["alerts"][0]
    am["labels"] = {**labels, "alertname": "HighCPU"}
    am["startsAt"] = stamp
    am["status"] = "resolved" if resolved else "firing"
    am["endsAt"] = stamp if resolved else "0001-01-01T00:00:00Z"
    if fingerprint is None:
        am.pop("fingerprint")
    else:
        am["fingerprint"] = fingerprint
    for alert in to_alerts(body, NOW):
        assert alert == Alert.model_validate(alert.model_dump())
