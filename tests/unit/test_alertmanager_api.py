"""Alertmanager's API for alerts (POST /api/v2/alerts) mapped as Alertmanager does it (api/v2/
openapi.yaml postAlerts; api.go postAlertsHandler): times defaulted, firing until endsAt passes,
empty labels removed, invalid alerts named while the valid ones go on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.sources.alertmanager.api import PartialPayload, to_alerts
from connectors.sources.alertmanager.mapping import PayloadError, labelset_fingerprint
from streams.core.models import AlertSource, AlertStatus

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LABELS = {"alertname": "InstanceDown", "instance": "web-1:9100", "severity": "critical"}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("starts", "ends", "status", "want_starts", "want_ends"),
    [
        # Prometheus' firing alerts carry an endsAt in the future (their validity): still firing.
        (
            NOW - timedelta(minutes=5),
            NOW + timedelta(minutes=4),
            AlertStatus.FIRING,
            NOW - timedelta(minutes=5),
            None,
        ),
        # No endsAt: firing.
        (NOW - timedelta(minutes=5), None, AlertStatus.FIRING, NOW - timedelta(minutes=5), None),
        # An endsAt that passed: resolved then.
        (
            NOW - timedelta(minutes=5),
            NOW - timedelta(seconds=30),
            AlertStatus.RESOLVED,
            NOW - timedelta(minutes=5),
            NOW - timedelta(seconds=30),
        ),
        # No startsAt: it starts when it arrived ...
        (None, None, AlertStatus.FIRING, NOW, None),
        # ... or, when only endsAt is set, at endsAt.
        (
            None,
            NOW - timedelta(minutes=1),
            AlertStatus.RESOLVED,
            NOW - timedelta(minutes=1),
            NOW - timedelta(minutes=1),
        ),
    ],
)
def test_times_and_status(
    starts: datetime | None,
    ends: datetime | None,
    status: AlertStatus,
    want_starts: datetime,
    want_ends: datetime | None,
) -> None:
    body: dict[str, object] = {
        "labels": LABELS,
        "annotations": {"summary": "down", "runbook_url": "https://rb/x"},
    }
    if starts:
        body["startsAt"] = iso(starts)
    if ends:
        body["endsAt"] = iso(ends)
    (alert,) = to_alerts([body], NOW)
    assert (alert.status, alert.starts_at, alert.ends_at) == (status, want_starts, want_ends)
    assert alert.source is AlertSource.ALERTMANAGER and alert.name == "InstanceDown"
    assert alert.summary == "down" and alert.annotations["runbook_url"] == "https://rb/x"
    assert alert.fingerprint == labelset_fingerprint(LABELS)  # Alertmanager's own fingerprint
    assert alert.severity == "critical" and alert.received_at == NOW


def test_empty_label_values_are_removed_before_fingerprinting() -> None:
    (alert,) = to_alerts([{"labels": {**LABELS, "team": ""}}], NOW)
    assert alert.labels == LABELS and alert.fingerprint == labelset_fingerprint(LABELS)


def test_an_alert_without_alertname_is_named_by_its_labels() -> None:
    (alert,) = to_alerts([{"labels": {"job": "node", "instance": "a"}}], NOW)
    assert alert.name == "instance=a,job=node"


def test_invalid_alerts_are_named_and_the_valid_ones_kept() -> None:
    body = [
        {"labels": LABELS},
        {"labels": {"alertname": ""}},  # only empty labels
        {"labels": LABELS, "startsAt": iso(NOW), "endsAt": iso(NOW - timedelta(hours=1))},
        {"annotations": {}},  # no labels at all
        {"labels": {"a": 1}},  # a label value that is not a string
    ]
    with pytest.raises(PartialPayload) as err:
        to_alerts(body, NOW)
    assert [a.name for a in err.value.alerts] == ["InstanceDown"]
    assert [p.split(":")[0] for p in err.value.problems] == ["1", "2", "3", "4"]
    assert (
        "at least one label" in err.value.problems[0] and "endsAt: before startsAt" in err.value.problems[1]
    )


@pytest.mark.parametrize("body", [{"labels": LABELS}, "x", [{"labels": {}}]])
def test_a_body_with_nothing_valid_is_refused(body: object) -> None:
    with pytest.raises(PayloadError) as err:
        to_alerts(body, NOW)
    assert not isinstance(err.value, PartialPayload)


def test_an_empty_array_is_accepted() -> None:
    assert to_alerts([], NOW) == []
