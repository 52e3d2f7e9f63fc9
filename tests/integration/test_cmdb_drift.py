"""Drift between the CMDB and monitoring on the real broker, with a real Prometheus: a host only
monitoring knows, a CMDB host nothing saw, a service that differs; the proposed corrections go
through the worker's validation and reconciliation like any CI update; a second pass resolves what
was corrected."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.kafka.broker import free_port
from ops.stack import Stack
from streams.core.dlq import header_map
from streams.core.models import AuditEvent, CMDBDrift, ConfigurationItem
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.examples import alert, configuration_item
from tests.kafka_util import consume, produce
from tests.prometheus import start_prometheus
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping itself every second: one `up` target, 127.0.0.1:<port>."""
    port = free_port()
    config = (
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    proc, url = start_prometheus(tmp_path, config, port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = httpx.get(f"{url}/api/v1/query", params={"query": "up"}).json()["data"]["result"]
        if result:
            break
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with pipeline_stack(kafka_broker, kafka_settings, tmp_path / "stack") as s:
        yield s


def test_drift_with_a_host_only_monitoring_knows_and_its_correction(
    kafka_settings: Settings, prometheus: str, stack: Stack, itsmctl: Itsmctl
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    env = {"ITSM_KAFKA_BOOTSTRAP": boot, "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix}
    old = datetime.now(UTC) - timedelta(days=3)
    cmdb = [
        configuration_item("web-1", hostname="web-1.example.com", updated_at=old),
        configuration_item("db-9", hostname="db-9.example.com", updated_at=old),  # nothing monitors it
    ]
    produce(boot, t("cmdb.ci"), [(c.ci_id.encode(), SERDE.encode(c), []) for c in cmdb])
    now = datetime.now(UTC)
    alerts = [
        alert(
            "a" * 16,
            labels={"alertname": "HighCPU", "instance": "web-1:9100", "service": "payments"},
            received_at=now,
        ),
        alert(
            "b" * 16,
            labels={"alertname": "DiskFull", "instance": "ghost-7.example.com:9100", "team": "team-batch"},
            received_at=now,
        ),
        alert(
            "c" * 16,
            labels={"alertname": "Old", "instance": "db-9:9100"},
            received_at=now - timedelta(days=2),
        ),
    ]
    produce(boot, t("alerts.raw"), [(a.fingerprint.encode(), SERDE.encode(a), []) for a in alerts])

    ran = itsmctl("cmdb", "reconcile", "--once", "--propose", "--prometheus", prometheus, **env)
    assert ran.returncode == 0, ran.stderr
    assert "1 prometheus targets" in ran.stdout.lower() and "3 correction(s) proposed" in ran.stdout
    listed = itsmctl("cmdb", "drift", "-o", "json", **env)
    assert listed.returncode == 1, listed.stderr  # drift found
    drift = {d["drift_id"]: d for d in json.loads(listed.stdout)["drift"]}
    assert set(drift) == {"missing:ghost-7", "missing:127.0.0.1", "unseen:db-9", "mismatch:web-1:service"}
    assert drift["missing:127.0.0.1"]["observed_by"] == ["prometheus"]
    assert drift["missing:ghost-7"]["observed_by"] == ["alerts"]
    assert (
        drift["mismatch:web-1:service"]["cmdb_value"],
        drift["mismatch:web-1:service"]["observed_value"],
    ) == (
        "checkout",
        "payments",
    )
    # The db-9 alert is two days old: outside the 24 h period, so db-9 counts as unseen.
    assert drift["unseen:db-9"]["last_seen_at"] is None
    text = itsmctl("cmdb", "drift", "--kind", "MISSING_IN_CMDB", **env)
    assert text.returncode == 1 and "ghost-7" in text.stdout and "db-9" not in text.stdout

    # The proposals go through the worker like any CI update from the source monitoring-drift.
    stack.start(["worker"])
    accepted = [
        SERDE.decode(m.value(), ConfigurationItem) for m in consume(boot, t("cmdb.ci"), 3, timeout=90)
    ]
    (ghost,) = [c for c in accepted if c.ci_id == "monitoring-ghost-7"]
    assert (ghost.ci_id, ghost.owner_group, ghost.source_system) == (
        "monitoring-ghost-7",
        "team-batch",
        "monitoring-drift",
    )
    # 127.0.0.1 has no owner in its labels: the CMDB's required owner_group refuses it.
    (dead,) = consume(boot, t("cmdb.ci.updates.dlq"), 1, timeout=30)
    headers = header_map(dead.headers())
    assert headers["dlq.error.class"] == "validation" and "owner_group" in headers["dlq.exception.message"]
    # web-1's service belongs to terraform and the CMDB before any monitoring guess: the proposal loses.
    audits = [SERDE.decode(m.value(), AuditEvent) for m in consume(boot, t("audit.events"), 2, timeout=30)]
    lost = [a for a in audits if a.action == "ci.reconcile.lost"]
    assert [(a.subject_id, a.details["field"], a.details["offered"]) for a in lost] == [
        ("web-1", "service", "payments")
    ]

    # A second pass: ghost-7 is in the CMDB now, so its drift is resolved (a tombstone).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        again = itsmctl("cmdb", "reconcile", "--once", **env)
        assert again.returncode == 0, again.stderr
        ids = {
            d["drift_id"] for d in json.loads(itsmctl("cmdb", "drift", "-o", "json", **env).stdout)["drift"]
        }
        if "missing:ghost-7" not in ids:
            break
        time.sleep(1)
    assert ids == {"unseen:db-9", "mismatch:web-1:service"}  # without --prometheus this pass
    first = {
        m.key(): SERDE.decode(m.value(), CMDBDrift)
        for m in consume(boot, t("cmdb.drift"), 8, timeout=10)
        if m.value()
    }
    assert first[b"unseen:db-9"].first_detected_at < first[b"unseen:db-9"].detected_at
    tombstones = [m.key() for m in consume(boot, t("cmdb.drift"), 20, timeout=5) if m.value() is None]
    assert b"missing:ghost-7" in tombstones and b"missing:127.0.0.1" in tombstones
