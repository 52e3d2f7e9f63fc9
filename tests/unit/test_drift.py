"""Drift classification between the CMDB and monitoring, table-driven; carrying first detection;
the corrections proposed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.core.models import Alert, CMDBDrift, ConfigurationItem, DriftKind
from streams.stages.drift import Observation, carry, classify, from_alert, from_target, proposal

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DAY = 86400.0


def ci(ci_id: str, **kw: Any) -> ConfigurationItem:
    data = {
        "ci_id": ci_id,
        "name": ci_id,
        "ci_class": "server",
        "hostname": f"{ci_id}.example.com",
        "service": "checkout",
        "owner_group": "team-web",
        "source_system": "servicenow-cmdb",
        "updated_at": NOW - timedelta(days=3),
    }
    return ConfigurationItem.model_validate({**data, **kw})


def seen(host: str, ago_h: float = 1, **kw: Any) -> Observation:
    return Observation(
        host=host, source=kw.pop("source", "alerts"), seen_at=NOW - timedelta(hours=ago_h), **kw
    )


@pytest.mark.parametrize(
    ("name", "cis", "observations", "expected"),
    [
        ("monitored and in the CMDB, agreeing", [ci("web-1")], [seen("web-1", service="checkout")], []),
        (
            "a host only monitoring knows",
            [ci("web-1")],
            [seen("web-1"), seen("ghost-7", service="batch")],
            [("missing:ghost-7", DriftKind.MISSING_IN_CMDB, None, None)],
        ),
        (
            "a CMDB host nothing saw in the period",
            [ci("web-1"), ci("web-2")],
            [seen("web-1"), seen("web-2", ago_h=30)],
            [("unseen:web-2", DriftKind.NOT_MONITORED, "web-2", None)],
        ),
        (
            "the service differs",
            [ci("web-1")],
            [seen("web-1", service="payments")],
            [("mismatch:web-1:service", DriftKind.ATTRIBUTE_MISMATCH, "web-1", "service")],
        ),
        (
            "an address the CMDB does not list",
            [ci("web-1", ip_addresses=["10.0.0.1"])],
            [seen("web-1", address="10.0.0.9")],
            [("mismatch:web-1:ip_addresses", DriftKind.ATTRIBUTE_MISMATCH, "web-1", "ip_addresses")],
        ),
        (
            "matched by address when the instance is an IP",
            [ci("db-1", ip_addresses=["10.0.0.5"])],
            [seen("10.0.0.5", source="prometheus")],
            [],
        ),
        ("a retired CI is neither missing nor unseen", [ci("old-1", deleted=True)], [], []),
        ("a CI without a host name is not expected to be monitored", [ci("svc", hostname=None)], [], []),
        (
            "a retired CI's host still monitored is missing",
            [ci("old-1", deleted=True)],
            [seen("old-1")],
            [("missing:old-1", DriftKind.MISSING_IN_CMDB, None, None)],
        ),
    ],
)
def test_classify(
    name: str,
    cis: list[ConfigurationItem],
    observations: list[Observation],
    expected: list[tuple[str, DriftKind, str | None, str | None]],
) -> None:
    found = classify(cis, observations, NOW, DAY)
    assert [(d.drift_id, d.kind, d.ci_id, d.field) for d in found] == expected


def test_observations_from_alert_labels_and_prometheus_targets() -> None:
    alert = Alert.model_validate(
        {
            "fingerprint": "f" * 16,
            "source": "ALERTMANAGER",
            "status": "FIRING",
            "name": "HighCPU",
            "labels": {
                "instance": "Web-1.example.com:9100",
                "service": "checkout",
                "team": "team-web",
                "ip": "10.0.0.1",
            },
            "starts_at": NOW,
            "received_at": NOW,
        }
    )
    o = from_alert(alert)
    assert o is not None and (o.host, o.service, o.owner, o.address) == (
        "web-1",
        "checkout",
        "team-web",
        "10.0.0.1",
    )
    assert from_alert(alert.model_copy(update={"labels": {"job": "x"}})) is None
    t = from_target({"instance": "10.0.0.5:9100", "job": "node"}, NOW)
    assert t is not None and (t.host, t.source) == ("10.0.0.5", "prometheus")


def test_first_detection_is_kept_and_gone_drift_is_resolved() -> None:
    earlier = NOW - timedelta(days=2)
    old = CMDBDrift(
        drift_id="missing:a", kind=DriftKind.MISSING_IN_CMDB, first_detected_at=earlier, detected_at=earlier
    )
    gone = old.model_copy(update={"drift_id": "missing:b"})
    new = classify([], [seen("a")], NOW, DAY)
    kept, resolved = carry(new, {"missing:a": old, "missing:b": gone})
    assert kept[0].first_detected_at == earlier and kept[0].detected_at == NOW
    assert resolved == ["missing:b"]


def test_corrections_come_from_the_drift_source() -> None:
    (missing,) = classify([], [seen("ghost-7", service="batch")], NOW, DAY)
    fix = proposal(missing, None, "team-batch", NOW)
    assert fix is not None and (fix.ci_id, fix.hostname, fix.service, fix.owner_group, fix.source_system) == (
        "monitoring-ghost-7",
        "ghost-7",
        "batch",
        "team-batch",
        "monitoring-drift",
    )
    web = ci("web-1")
    (mismatch,) = classify([web], [seen("web-1", service="payments")], NOW, DAY)
    fix = proposal(mismatch, web, None, NOW)
    assert fix is not None and fix.service == "payments" and fix.source_system == "monitoring-drift"
    (unseen,) = classify([web], [], NOW, DAY)
    assert proposal(unseen, web, None, NOW) is None  # people decide whether a silent host is gone
