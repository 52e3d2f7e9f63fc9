"""Incidents linked to the deployment that probably caused them, and DORA's change failure rate and
time to restore from the pipeline's own records, on the real broker: a change, two deployments
on a CI, an alert on that CI; the incident names the latest deployment (change, commit, build),
audit.events records the cause and the restore, and `itsmctl changes report` shows 1 of 2
deployments followed by an incident (50 %) and the restore time, figured by hand from the
records."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.kafka import Broker
from streams.core import models as m
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.examples import approved_change, configuration_item
from tests.kafka_util import consume, produce
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def test_an_incident_names_the_deployment_before_it_and_the_report_counts_it(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    boot, t = s.kafka_bootstrap, s.topic
    now = datetime.now(UTC)
    change = approved_change()
    produce(boot, t("itsm.changes"), [(b"CHG0030042", SERDE.encode(change), [])])
    produce(boot, t("cmdb.ci"), [(b"web-1", SERDE.encode(configuration_item("web-1")), [])])

    def deploy(dep: str, at: datetime) -> tuple[bytes, bytes, list[object]]:
        event = m.DeploymentEvent(
            event_id=f"{dep}-SUCCEEDED",
            deployment_id=dep,
            phase=m.DeployPhase.SUCCEEDED,
            service="checkout",
            environment="production",
            ci_ids=["web-1"],
            commit_ids=[f"c0ffee{dep[-1]}"],
            build_number=f"10{dep[-1]}",
            duration_ms=60_000,
            change_id="CHG0030042",  # as a pipeline that passed the change gate sends it
            occurred_at=at,
        )
        return dep.encode(), SERDE.encode(event), []

    lifecycle = {"stable_period": 0.5, "tick_interval": 0.2}
    with pipeline_stack(kafka_broker, s, tmp_path / "stack", lifecycle=lifecycle) as stack:
        stack.start(["worker"])
        produce(boot, t("deploy.events"), [deploy("d1", now - timedelta(minutes=30)), deploy("d2", now)])
        outcomes = [
            SERDE.decode(r.value(), m.AuditEvent) for r in consume(boot, t("audit.events"), 2, timeout=90)
        ]
        assert sorted(a.details["deployment_id"] for a in outcomes if a.action == "deploy.outcome") == [
            "d1",
            "d2",
        ]
        time.sleep(1)  # the worker's deploy view follows deploy.events

        def alert(status: str) -> tuple[bytes, bytes, list[object]]:
            at = datetime.now(UTC)
            a = m.Alert(
                fingerprint="cause-1",
                source=m.AlertSource.ALERTMANAGER,
                status=m.AlertStatus(status),
                name="CheckoutErrors",
                severity="critical",
                summary="checkout 5xx",
                labels={"alertname": "CheckoutErrors", "ci_id": "web-1"},
                starts_at=now + timedelta(seconds=1),
                ends_at=at if status == "RESOLVED" else None,
                received_at=at,
            )
            return b"cause-1", SERDE.encode(a), []

        produce(boot, t("alerts.raw"), [alert("FIRING")])
        (opened,) = [
            SERDE.decode(r.value(), m.IncidentCommand)
            for r in consume(boot, t("itsm.incident.commands"), 1, timeout=60)
        ]
        # The latest deployment on the CI, with its change, commit and build.
        assert (
            "Probable cause: deployment d2 of checkout "
            "(succeeded; change CHG0030042; build 102; commit c0ffee2)" in opened.description
        )
        assert opened.target_fields["servicenow"]["caused_by"] == "CHG0030042"
        time.sleep(1)
        produce(boot, t("alerts.raw"), [alert("RESOLVED")])
        deadline = time.monotonic() + 60
        while True:
            audits = [
                SERDE.decode(r.value(), m.AuditEvent) for r in consume(boot, t("audit.events"), 4, timeout=5)
            ]
            if len(audits) >= 4 or time.monotonic() > deadline:
                break
        cause = next(a for a in audits if a.action == "incident.cause")
        restored = next(a for a in audits if a.action == "incident.restored")
        assert (cause.details["deployment_id"], cause.subject_id) == ("d2", opened.correlation_id)
        # By hand: restored_at - opened_at of the incident, from its own record.
        took = (
            datetime.fromisoformat(restored.details["restored_at"])
            - datetime.fromisoformat(restored.details["opened_at"])
        ).total_seconds()
        assert 1 <= took < 60

        report = subprocess.run(
            [sys.executable, "-m", "ops.cli", "changes", "report", "--period", "day", "-o", "json"],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert report.returncode == 0, report.stderr
        (row,) = [r for r in json.loads(report.stdout)["rows"] if r["service"] == "checkout"]
        # 2 deployments, 1 followed by an incident that named it: 50 %; one restore of `took` s.
        assert (row["deploys"], row["caused_incidents"], row["change_failure_rate"]) == (2, 1, 0.5)
        assert row["mean_time_to_restore_s"] == pytest.approx(round(took), abs=1)
        text = subprocess.run(
            [sys.executable, "-m", "ops.cli", "changes", "report", "--period", "day"],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        (line,) = [x for x in text.splitlines() if x.startswith("checkout")]
        assert line.split()[8:10] == ["50%", f"{round(took) / 60:.1f}m"], text
