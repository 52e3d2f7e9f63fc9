"""One valid example of every canonical record, for round trips and fixtures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from streams.core import models as m

T0 = datetime(2026, 11, 27, 8, 0, 0, 123000, tzinfo=UTC)


def alert(
    fingerprint: str = "3f8a6b1c2d4e5f60", status: m.AlertStatus = m.AlertStatus.FIRING, **kw: object
) -> m.Alert:
    base: dict[str, object] = dict(
        fingerprint=fingerprint,
        source=m.AlertSource.ALERTMANAGER,
        source_instance="http://am:9093",
        status=status,
        name="HighCPU",
        severity="warning",
        summary="CPU above 90%",
        labels={"alertname": "HighCPU", "instance": "web-1:9100"},
        annotations={"runbook": "r1"},
        starts_at=T0,
        received_at=T0 + timedelta(seconds=2),
    )
    base.update(kw)
    return m.Alert.model_validate(base)


EXAMPLES: dict[type[m.Record], m.Record] = {
    m.Alert: alert(ends_at=T0 + timedelta(minutes=5), generator_url="http://prom/graph"),
    m.ConfigurationItem: m.ConfigurationItem(
        ci_id="ci-web-1",
        name="web-1",
        ci_class="cmdb_ci_linux_server",
        hostname="web-1.example.com",
        ip_addresses=["10.0.0.5"],
        service="web",
        criticality=m.Criticality.HIGH,
        owner_group="web-ops",
        source_system="discovery",
        attributes={"os": "debian"},
        relationships=[m.Relationship(type=m.RelationshipType.RUNS_ON, target_ci_id="ci-host-1")],
        updated_at=T0,
    ),
    m.MaintenanceWindow: m.MaintenanceWindow(
        window_id="mw-1",
        kind=m.WindowKind.MAINTENANCE,
        scope=m.WindowScope.CI_AND_DEPENDENTS,
        target="ci-db-1",
        starts_at=T0,
        ends_at=T0 + timedelta(days=30),
        recurrence=m.Recurrence(
            weekdays=[m.Weekday.SAT, m.Weekday.SUN],
            start_time="02:00",
            duration_minutes=120,
            timezone="Europe/Berlin",
        ),
        change_id="CHG0030001",
        reason="patching",
        created_by="ops",
        updated_at=T0,
    ),
    m.DeploymentEvent: m.DeploymentEvent(
        event_id="ev-1",
        deployment_id="dep-1",
        phase=m.DeployPhase.SUCCEEDED,
        service="checkout",
        environment="production",
        ci_ids=["ci-web-1"],
        commit_ids=["a1b2c3"],
        build_number="421",
        pipeline="gitlab/checkout",
        change_id="CHG0030001",
        duration_ms=93000,
        triggered_by="ci-bot",
        occurred_at=T0,
    ),
    m.IncidentCommand: m.IncidentCommand(
        command_id="c-1",
        correlation_id="itsmp-3f8a",
        action=m.IncidentAction.OPEN,
        short_description="[warning] CPU above 90%",
        impact=2,
        urgency=2,
        ci_id="ci-web-1",
        alert_fingerprints=["3f8a"],
        alert_count=3,
        source="ALERTMANAGER",
        labels={"a": "b"},
        issued_at=T0,
    ),
    m.ChangeCommand: m.ChangeCommand(
        command_id="cc-1",
        correlation_id="chg-dep-1",
        action=m.ChangeAction.CLOSE,
        change_type=m.ChangeType.NORMAL,
        short_description="Deploy checkout 421",
        service="checkout",
        ci_ids=["ci-web-1"],
        planned_start=T0,
        planned_end=T0 + timedelta(hours=1),
        close_code=m.CloseCode.SUCCESSFUL,
        commit_ids=["a1b2c3"],
        build_number="421",
        deploy_duration_ms=93000,
        issued_at=T0,
    ),
    m.SinkResult: m.SinkResult(
        command_id="c-1",
        correlation_id="itsmp-3f8a",
        target="servicenow",
        record_type=m.RecordType.INCIDENT,
        outcome=m.SinkOutcome.CREATED,
        itsm_id="abc",
        itsm_number="INC0010001",
        attempts=1,
        completed_at=T0,
    ),
    m.AuditEvent: m.AuditEvent(
        event_id="au-1",
        occurred_at=T0.astimezone(timezone(timedelta(hours=2))),
        actor="ci-bot",
        action="gate.check",
        subject_type="deployment",
        subject_id="dep-1",
        outcome=m.AuditOutcome.ALLOWED,
        reason="approved change CHG0030001",
        details={"env": "production"},
    ),
}


def raw_alert_bytes(**override: object) -> bytes:
    """Single-object Avro bytes of an Alert with fields overridden past model validation.

    Avro accepts what the canonical model refuses (an empty name, say): the agent must tell them apart.
    """
    import io

    from fastavro import schemaless_writer

    from streams.core.serde import SchemaStore

    loaded = SchemaStore().for_record(m.Alert)
    buf = io.BytesIO()
    schemaless_writer(buf, loaded.parsed, alert().to_avro() | override)
    return b"\xc3\x01" + loaded.fingerprint + buf.getvalue()


def approved_change(change_id: str = "CHG0030042", service: str = "checkout", **kw: object) -> m.ChangeRecord:
    """An approved, scheduled ServiceNow change of the service, its window around now."""
    now = datetime.now(UTC)
    return m.ChangeRecord.model_validate(
        {
            "change_id": change_id,
            "itsm_id": "a" * 32,
            "target": "servicenow",
            "change_type": "NORMAL",
            "status": "SCHEDULED",
            "approval": "approved",
            "service": service,
            "planned_start": now - timedelta(hours=1),
            "planned_end": now + timedelta(hours=1),
            "updated_at": now,
            **kw,
        }
    )


def configuration_item(ci_id: str = "web-1", **kw: object) -> m.ConfigurationItem:
    """A CI of service checkout owned by team-web, written by the CMDB's owner, updated now."""
    return m.ConfigurationItem.model_validate(
        {
            "ci_id": ci_id,
            "name": ci_id,
            "ci_class": "server",
            "service": "checkout",
            "owner_group": "team-web",
            "source_system": "servicenow-cmdb",
            "updated_at": datetime.now(UTC),
            **kw,
        }
    )
