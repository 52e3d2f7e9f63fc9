"""A scripted storm of over 10,000 records through the real worker on the real broker.

Every scenario of alert intelligence at once: duplicates and an HA pair, unknown CIs, poison
records, a maintenance window opening and closing, a parent CI outage with dependents,
flapping alerts and alerts that clear. The test asserts exactly the commands, suppressions and
dead letters expected, and that every input is accounted for:
in = emitted + absorbed (the incidents' alerts) + deduplicated + suppressed + dead-lettered.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.examples import raw_alert_bytes
from tests.kafka_util import consume, kafka_env, produce

pytestmark = pytest.mark.integration
SERDE = AvroSerde()
SOURCES = [
    ("ALERTMANAGER", "warning"),
    ("GRAFANA", "critical"),
    ("PAGERDUTY", "error"),
    ("DATADOG", "P3"),
    ("CANONICAL", "info"),
]
STABLE = 15.0


def alert(fp: str, i: int, status: str = "FIRING", instance: str = "", copy: int = 0, **labels: str) -> bytes:
    """Alert i of the storm; copies differ only in which member of an HA pair sent them."""
    source, severity = SOURCES[i % len(SOURCES)]
    now = datetime.now(UTC)
    return SERDE.encode(
        m.Alert(
            fingerprint=fp,
            source=m.AlertSource(source),
            source_instance=f"am-{copy % 2}",
            status=m.AlertStatus(status),
            name="Storm",
            severity=severity,
            summary=f"storm {fp}",
            labels={"alertname": "Storm", "instance": instance, **labels},
            starts_at=now,
            ends_at=now if status == "RESOLVED" else None,
            received_at=now,
        )
    )


def ci(ci_id: str, hostname: str, depends_on: str | None = None) -> tuple[bytes, bytes, list]:  # type: ignore[type-arg]
    rels = [m.Relationship(type=m.RelationshipType.DEPENDS_ON, target_ci_id=depends_on)] if depends_on else []
    record = m.ConfigurationItem(
        ci_id=ci_id,
        name=hostname,
        ci_class="cmdb_ci_server",
        hostname=hostname,
        source_system="storm",
        relationships=rels,
        updated_at=datetime.now(UTC),
    )
    return ci_id.encode(), SERDE.encode(record), []


def outcome_counts(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return {
        o: float(v)
        for o, v in re.findall(r'itsm_pipeline_alert_outcomes_total\{outcome="(\w+)"\} ([\d.e+]+)', text)
    }


def test_a_scripted_storm_is_accounted_for_exactly(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    boot, raw = s.kafka_bootstrap, s.topic("alerts.raw")
    # --- the CMDB and a maintenance window, before the worker starts ----------------------------
    cis = [ci("db-core", "db-core")]
    cis += [ci(f"app-{i:02d}", f"app-{i:02d}", "db-core") for i in range(50)]
    cis += [ci(f"host-{i:04d}", f"host-{i:04d}") for i in range(1000)]
    cis += [ci("maint-0", "maint-0")] + [
        ci(f"maint-dep-{i:02d}", f"maint-dep-{i:02d}", "maint-0") for i in range(20)
    ]
    produce(boot, s.topic("cmdb.ci"), cis)
    window_end = datetime.now(UTC) + timedelta(seconds=40)
    window = m.MaintenanceWindow(
        window_id="mw-storm",
        kind="MAINTENANCE",
        scope="CI_AND_DEPENDENTS",
        target="maint-0",
        starts_at=datetime.now(UTC) - timedelta(minutes=1),
        ends_at=window_end,
        change_id="CHG0031234",
        updated_at=datetime.now(UTC),
    )
    produce(boot, s.topic("maintenance.windows"), [(b"mw-storm", SERDE.encode(window), [])])

    stack = Stack(
        tmp_path / "stack",
        boot,
        kafka_env=kafka_env(boot),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        lifecycle={"dedup_window": 3600, "stable_period": STABLE, "tick_interval": 0.5},
    )
    stack.start(["worker"])
    commands = s.topic("itsm.incident.commands")
    sent = 0
    try:
        # --- phase A: the parent outage, and alerts on the dependents of a CI in maintenance -----
        # (maint-0 itself stays quiet: were it to alert, its dependents would join its incident
        # when the window closes, in whichever order the partitions tick.)
        first = [(b"parent", alert("parent", 0, instance="db-core:9100"), [])]
        first += [
            (f"maint-{i}".encode(), alert(f"maint-{i}", i, instance=h), [])
            for i, h in enumerate([f"maint-dep-{j:02d}" for j in range(20)])
        ]
        produce(boot, raw, first)
        sent += len(first)
        assert len(consume(boot, commands, 1, timeout=90)) == 1, stack.log_tail("worker")
        assert len(consume(boot, s.topic("alerts.suppressed"), 20, timeout=60)) == 20

        # --- phase B: the storm -------------------------------------------------------------
        storm: list[tuple[bytes, bytes, list]] = []  # type: ignore[type-arg]
        for i in range(1000):  # known CIs, then 7 repeats each (HA pair copies among them)
            fp = f"u{i:04d}"
            storm += [
                (fp.encode(), alert(fp, i, instance=f"host-{i:04d}:9100", copy=k), []) for k in range(8)
            ]
        for i in range(500):  # unknown CIs, once repeated
            fp = f"ghost{i:03d}"
            storm += [(fp.encode(), alert(fp, i, instance=f"ghost-{i}.nowhere:9100"), [])] * 2
        for i in range(50):  # dependents of the failed parent, once repeated
            fp = f"dep{i:02d}"
            storm += [(fp.encode(), alert(fp, i, instance=f"app-{i:02d}:8080"), [])] * 2
        for i in range(100):  # flapping: fire, clear, fire again inside the stable period
            fp = f"flap{i:03d}"
            storm += [(fp.encode(), alert(fp, i, st), []) for st in ("FIRING", "RESOLVED", "FIRING")]
        for i in range(200):  # fire and clear for good
            fp = f"clear{i:03d}"
            storm += [(fp.encode(), alert(fp, i, st), []) for st in ("FIRING", "RESOLVED")]
        for i in range(200):  # undecodable
            storm.append((f"junk{i}".encode(), b"\x00\xff junk " + bytes([i % 256]), []))
        for i in range(100):  # decodable, invalid
            storm.append((f"invalid{i}".encode(), raw_alert_bytes(fingerprint=f"invalid{i}", name=""), []))
        produce(boot, raw, storm)
        sent += len(storm)

        # --- phase C: the flapping alerts clear for good; the window closes --------------------
        time.sleep(2)
        final = [(f"flap{i:03d}".encode(), alert(f"flap{i:03d}", i, "RESOLVED"), []) for i in range(100)]
        produce(boot, raw, final)
        sent += len(final)
        assert sent >= 10_000

        expected = Counter(
            {"OPEN": 1000 + 500 + 1 + 100 + 200 + 20, "UPDATE": 50 + 100, "RESOLVE": 200 + 100}
        )
        total = sum(expected.values())
        wait = max(0.0, (window_end - datetime.now(UTC)).total_seconds()) + STABLE + 120
        msgs = consume(boot, commands, total, timeout=wait)
        got = [SERDE.decode(msg.value(), m.IncidentCommand) for msg in msgs]
        assert Counter(c.action.value for c in got) == expected, stack.log_tail("worker")
        # Nothing more trickles in.
        assert len(consume(boot, commands, total + 1, timeout=5)) == total

        by_fp: dict[str, list[m.IncidentCommand]] = {}
        for c in got:
            by_fp.setdefault(c.alert_fingerprints[0], []).append(c)
        # HA pair and repeats: one OPEN per known alert, with its CI.
        assert all([c.action.value for c in by_fp[f"u{i:04d}"]] == ["OPEN"] for i in range(1000))
        assert by_fp["u0007"][0].ci_id == "host-0007"
        # Unknown CIs: opened, marked.
        assert by_fp["ghost001"][0].ci_id is None and "CI: unknown" in by_fp["ghost001"][0].description
        # Parent outage: dependents grouped into the parent's incident.
        parent_id = by_fp["parent"][0].correlation_id
        assert {c.correlation_id for i in range(50) for c in by_fp[f"dep{i:02d}"]} == {parent_id}
        assert all(c.action.value == "UPDATE" for i in range(50) for c in by_fp[f"dep{i:02d}"])
        # Flapping: open, flap update, auto-resolve after the final clear.
        assert all(
            [c.action.value for c in by_fp[f"flap{i:03d}"]] == ["OPEN", "UPDATE", "RESOLVE"]
            for i in range(100)
        )
        assert all(
            [c.action.value for c in by_fp[f"clear{i:03d}"]] == ["OPEN", "RESOLVE"] for i in range(200)
        )
        # The maintenance alerts opened their incidents when the window closed, not before.
        maint_open = [
            msg
            for msg in msgs
            if SERDE.decode(msg.value(), m.IncidentCommand).alert_fingerprints[0].startswith("maint-")
        ]
        assert len(maint_open) == 20
        assert all(msg.timestamp()[1] / 1000 >= window_end.timestamp() - 1 for msg in maint_open)

        suppressed = [
            SERDE.decode(msg.value(), m.SuppressedAlert)
            for msg in consume(boot, s.topic("alerts.suppressed"), 21, timeout=5)
        ]
        assert len(suppressed) == 20 and {x.window_id for x in suppressed} == {"mw-storm"}
        assert {x.change_id for x in suppressed} == {"CHG0031234"}
        dead = consume(boot, raw + ".dlq", 301, timeout=5)
        assert len(dead) == 300

        # Every input accounted for, from the worker's own metrics.
        outcomes = outcome_counts(stack.worker_metrics_port)
        assert outcomes == {
            "emitted": 1 + 1000 + 500 + 50 + 100 + 100 + 200,
            "absorbed": 100 + 200 + 100,
            "deduplicated": 7000 + 500 + 50,
            "suppressed": 20,
            "dead_lettered": 300,
        }
        assert sum(outcomes.values()) == sent
    finally:
        codes = stack.stop()
    assert codes == {"worker": 0}, stack.log_tail("worker")
