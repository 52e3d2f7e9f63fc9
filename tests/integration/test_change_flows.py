"""The change flows as real processes on the real broker: CI updates validated into the CMDB and
change requests, parking until a CI arrives (and its timeout), deploys linked and flagged, the
change report. Every input is accounted for."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.dlq import header_map
from streams.core.models import (
    AuditEvent,
    AuditOutcome,
    ChangeCommand,
    ChangeRecord,
    ConfigurationItem,
    DeploymentEvent,
)
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.examples import approved_change, configuration_item
from tests.kafka_util import consume, produce
from tests.stacks import pipeline_stack

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


@pytest.fixture
def stack(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    with pipeline_stack(
        kafka_broker,
        kafka_settings,
        tmp_path / "stack",
        changes_rules={"park_timeout": 12.0, "park_recheck": 0.5},
    ) as s:
        yield s


def rec(record: Any, key: str) -> tuple[bytes, bytes, list[Any]]:
    return key.encode(), SERDE.encode(record), []


def decode_all(msgs: list[Any], model: Any) -> list[Any]:
    return [SERDE.decode(m.value(), model) for m in msgs]


def test_ci_updates_are_validated_into_the_cmdb_and_significant_ones_become_change_requests(
    stack: Stack, kafka_settings: Settings
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    later = datetime.now(UTC) + timedelta(seconds=1)
    updates = [
        rec(configuration_item("web-1"), "web-1"),  # created by the CMDB's owner
        rec(
            configuration_item("web-1", service="payments", source_system="terraform", updated_at=later),
            "web-1",
        ),
        rec(
            configuration_item("web-1", owner_group="x", source_system="discovery", updated_at=later), "web-1"
        ),  # auth
        rec(configuration_item("web-2", environment="prod"), "web-2"),  # validation
        (b"web-3", b"not avro", []),  # schema
        rec(configuration_item("web-4", source_system="spreadsheet"), "web-4"),  # unknown source: auth
    ]
    produce(boot, t("cmdb.ci.updates"), updates)
    stack.start(["worker"])
    accepted = decode_all(consume(boot, t("cmdb.ci"), 2, timeout=90), ConfigurationItem)
    assert [(c.ci_id, c.service) for c in accepted] == [("web-1", "checkout"), ("web-1", "payments")]
    (change,) = decode_all(consume(boot, t("itsm.change.commands"), 1, timeout=30), ChangeCommand)
    assert change.change_type.value == "NORMAL" and "service: checkout -> payments" in change.description
    dead = consume(boot, t("cmdb.ci.updates.dlq"), 4, timeout=30)
    classes = sorted(header_map(m.headers())["dlq.error.class"] for m in dead)
    assert classes == ["auth", "auth", "schema", "validation"]
    audits = decode_all(consume(boot, t("audit.events"), 3, timeout=30), AuditEvent)
    assert sorted(a.subject_id for a in audits if a.outcome is AuditOutcome.REJECTED) == [
        "web-1",
        "web-2",
        "web-4",
    ]
    # 6 in = 2 accepted into cmdb.ci + 4 dead letters; nothing more arrives.
    time.sleep(2)
    assert len(consume(boot, t("cmdb.ci"), 10, timeout=3)) == 2
    assert len(consume(boot, t("cmdb.ci.updates.dlq"), 10, timeout=3)) == 4
    # The worker's own metrics account for each of the 6: in = accepted + rejected + dead-lettered.
    text = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
    counts = {
        outcome: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('itsm_pipeline_change_inputs_total{input="ci_update"')
        for outcome in [line.split('outcome="')[1].split('"')[0]]
    }
    assert counts == {"accepted": 1.0, "accepted_with_change": 1.0, "rejected": 3.0, "dead_lettered": 1.0}


def test_a_parked_change_request_completes_when_its_ci_arrives_and_one_whose_ci_never_comes_is_dead_lettered(
    stack: Stack, kafka_settings: Settings
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic

    def request(cid: str, ci_id: str) -> tuple[bytes, bytes, list[Any]]:
        cmd = ChangeCommand.model_validate(
            {
                "command_id": cid,
                "correlation_id": cid,
                "action": "CREATE",
                "change_type": "NORMAL",
                "short_description": f"Patch {ci_id}",
                "ci_ids": [ci_id],
                "issued_at": datetime.now(UTC),
            }
        )
        return rec(cmd, cid)

    stack.start(["worker"])
    produce(boot, t("change.requests"), [request("chg-a", "db-new"), request("chg-b", "db-never")])
    time.sleep(4)
    assert consume(boot, t("itsm.change.commands"), 1, timeout=2) == []  # both parked
    produce(
        boot, t("cmdb.ci.updates"), [rec(configuration_item("db-new"), "db-new")]
    )  # the partial import completes
    (forwarded,) = decode_all(consume(boot, t("itsm.change.commands"), 1, timeout=30), ChangeCommand)
    assert forwarded.correlation_id == "chg-a"
    (dead,) = consume(boot, t("change.requests.dlq"), 1, timeout=40)
    h = header_map(dead.headers())
    assert dead.key() == b"chg-b" and h["dlq.error.class"] == "validation"
    assert (
        "db-never not in the CMDB" in h["dlq.exception.message"]
        and "referential integrity" in h["dlq.exception.message"]
    )
    assert len(consume(boot, t("itsm.change.commands"), 5, timeout=3)) == 1


def test_deploys_are_linked_to_their_change_enriched_closed_or_flagged_and_reported(
    stack: Stack, kafka_settings: Settings
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    change = approved_change()
    produce(boot, t("itsm.changes"), [rec(change, change.change_id)])
    produce(boot, t("cmdb.ci"), [rec(configuration_item("web-1"), "web-1")])

    def deploy(dep: str, phase: str, service: str = "checkout", **kw: Any) -> tuple[bytes, bytes, list[Any]]:
        event = DeploymentEvent.model_validate(
            {
                "event_id": f"{dep}-{phase}",
                "deployment_id": dep,
                "phase": phase,
                "service": service,
                "environment": "production",
                "ci_ids": ["web-1"],
                "commit_ids": ["abc123"],
                "build_number": "42",
                "occurred_at": datetime.now(UTC),
                **kw,
            }
        )
        return rec(event, dep)

    stack.start(["worker"])
    produce(
        boot,
        t("deploy.events"),
        [
            deploy("d1", "STARTED"),
            deploy("d1", "SUCCEEDED", duration_ms=93_000),
            deploy("d2", "FAILED", duration_ms=12_000, failure_reason="smoke tests red"),
            deploy("d3", "SUCCEEDED", service="search", duration_ms=5_000),  # no change covers search
            deploy("d4", "SUCCEEDED", environment="staging"),  # staging needs no change
        ],
    )
    commands = decode_all(consume(boot, t("itsm.change.commands"), 3, timeout=90), ChangeCommand)
    # d1 and d2 travel on different partitions: their order is not defined, d1's own order is.
    by = {(c.command_id, c.action.value, c.close_code.value if c.close_code else None) for c in commands}
    assert by == {
        ("deploy-d1-STARTED", "UPDATE", None),
        ("deploy-d1-SUCCEEDED", "CLOSE", "SUCCESSFUL"),
        ("deploy-d2-FAILED", "CLOSE", "UNSUCCESSFUL"),
    }
    d1 = [c for c in commands if c.command_id.startswith("deploy-d1")]
    assert [c.action.value for c in d1] == ["UPDATE", "CLOSE"]
    assert {c.itsm_ref for c in commands} == {"a" * 32}
    assert (
        d1[1].deploy_duration_ms == 93_000 and d1[1].commit_ids == ["abc123"] and d1[1].build_number == "42"
    )
    audits = decode_all(consume(boot, t("audit.events"), 3, timeout=30), AuditEvent)
    assert sorted((a.action, a.outcome.value) for a in audits) == [
        ("deploy.outcome", "DONE"),
        ("deploy.outcome", "DONE"),
        ("deploy.unlinked", "FLAGGED"),
    ]
    time.sleep(2)
    assert len(consume(boot, t("itsm.change.commands"), 10, timeout=3)) == 3  # nothing for d3, d4
    report = subprocess.run(
        [sys.executable, "-m", "ops.cli", "changes", "report", "--period", "day"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    lines = {line.split()[0]: line for line in report.stdout.splitlines()[2:]}
    assert lines["checkout"].split()[2:6] == ["2", "1", "1", "50%"], report.stdout
    assert "failed: smoke tests red (1)" in lines["checkout"]
    # search: no linked deploy, one unlinked; no change failure rate or restore time to give
    assert lines["search"].split()[2] == "0" and lines["search"].split()[7:10] == ["1", "-", "-"], (
        report.stdout
    )


@pytest.fixture
def slow_park(kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """A park timeout well beyond a worker's stop and start: the restart test must not race it."""
    with pipeline_stack(
        kafka_broker,
        kafka_settings,
        tmp_path / "stack",
        changes_rules={"park_timeout": 90.0, "park_recheck": 0.5},
    ) as s:
        yield s


def test_a_parked_deployment_survives_a_worker_restart(slow_park: Stack, kafka_settings: Settings) -> None:
    stack = slow_park
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    now = datetime.now(UTC)
    change = ChangeRecord.model_validate(
        {
            "change_id": "CHG0030077",
            "itsm_id": "b" * 32,
            "target": "servicenow",
            "change_type": "NORMAL",
            "status": "IMPLEMENT",
            "service": "checkout",
            "planned_start": now - timedelta(hours=1),
            "planned_end": now + timedelta(hours=1),
            "updated_at": now,
        }
    )
    produce(boot, t("itsm.changes"), [rec(change, change.change_id)])
    event = DeploymentEvent.model_validate(
        {
            "event_id": "d9-SUCCEEDED",
            "deployment_id": "d9",
            "phase": "SUCCEEDED",
            "service": "checkout",
            "environment": "production",
            "ci_ids": ["db-late"],
            "duration_ms": 42_000,
            "occurred_at": now,
        }
    )
    stack.start(["worker"])
    produce(boot, t("deploy.events"), [rec(event, "d9")])
    time.sleep(6)  # parked, and its offset committed
    assert consume(boot, t("itsm.change.commands"), 1, timeout=2) == []
    assert stack.stop_one("worker") == 0
    stack.start(["worker"])  # the parked record comes back from the table's changelog
    produce(boot, t("cmdb.ci.updates"), [rec(configuration_item("db-late"), "db-late")])
    (cmd,) = decode_all(consume(boot, t("itsm.change.commands"), 1, timeout=90), ChangeCommand)
    assert cmd.command_id == "deploy-d9-SUCCEEDED" and cmd.deploy_duration_ms == 42_000
    assert len(consume(boot, t("deploy.events.dlq"), 1, timeout=2)) == 0
    # The restarted worker did not read the deployment again: it came back from the changelog.
    text = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
    deploy_lines = [
        line
        for line in text.splitlines()
        if line.startswith('itsm_pipeline_change_inputs_total{input="deploy"')
    ]
    assert any('outcome="unparked"} 1.0' in line for line in deploy_lines), deploy_lines
    assert not any('outcome="parked"' in line for line in deploy_lines), deploy_lines


def test_three_sources_reconcile_a_ci_field_by_field_with_provenance_and_audited_losses(
    stack: Stack, kafka_settings: Settings, itsmctl: Any
) -> None:
    """The CMDB of record, discovery and terraform report db-1 through the real worker: each field
    keeps the value of the source its reconciliation rule ranks first (ops/rules/changes.toml), every
    losing value is an audit record, and `itsmctl cmdb show` names each field's source and age."""
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    now = datetime.now(UTC).replace(microsecond=0)
    base = {"hostname": "db-1", "attributes": {"os": "debian 12"}}
    updates = [
        configuration_item("db-1", **base, updated_at=now - timedelta(minutes=3)),
        configuration_item(  # discovery outranks the CMDB for hostname and attributes
            "db-1",
            hostname="db-1.prod",
            attributes={"os": "debian 13"},
            source_system="discovery",
            updated_at=now - timedelta(minutes=2),
        ),
        configuration_item(  # terraform: its hostname loses to discovery's, its service wins
            "db-1",
            hostname="db-1.tf",
            service="ledger",
            attributes={"os": "debian 13"},
            source_system="terraform",
            updated_at=now - timedelta(minutes=1),
        ),
        configuration_item(  # the CMDB cannot take back terraform's service; its os loses too
            "db-1", hostname="db-1.prod", attributes={"os": "rhel 9"}, updated_at=now
        ),
    ]
    produce(boot, t("cmdb.ci.updates"), [rec(u, "db-1") for u in updates])
    stack.start(["worker"])
    versions = decode_all(consume(boot, t("cmdb.ci"), 4, timeout=90), ConfigurationItem)
    assert [(v.source_system, v.hostname, v.service, v.attributes["os"]) for v in versions] == [
        ("servicenow-cmdb", "db-1", "checkout", "debian 12"),
        ("discovery", "db-1.prod", "checkout", "debian 13"),
        ("terraform", "db-1.prod", "ledger", "debian 13"),
        # The CMDB's last update lost every field it changed; it only confirmed what it holds
        # (owner_group, criticality, ...), so their age restarts and nothing else moves.
        ("servicenow-cmdb", "db-1.prod", "ledger", "debian 13"),
    ]
    assert versions[3].provenance["owner_group"].at == now
    assert versions[3].provenance["hostname"].source == "discovery"
    audits = decode_all(consume(boot, t("audit.events"), 4, timeout=30), AuditEvent)
    lost = sorted(
        (a.actor, a.details["field"], a.details["offered"], a.details["kept_source"]) for a in audits
    )
    assert lost == [
        ("servicenow-cmdb", "attributes.os", "rhel 9", "discovery"),
        ("servicenow-cmdb", "service", "checkout", "terraform"),
        ("terraform", "hostname", "db-1.tf", "discovery"),
    ]
    assert all(a.action == "ci.reconcile.lost" and a.outcome is AuditOutcome.DENIED for a in audits)
    # Nothing more arrives, nothing is dead-lettered.
    time.sleep(2)
    assert len(consume(boot, t("cmdb.ci"), 10, timeout=3)) == 4
    assert consume(boot, t("cmdb.ci.updates.dlq"), 1, timeout=2) == []
    text = httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text
    counted = 'itsm_pipeline_ci_reconciliation_total{{ci_class="server",field="{}",outcome="{}"}} 1.0'
    assert counted.format("hostname", "lost_priority") in text
    assert counted.format("service", "won_priority") in text

    env = {"ITSM_KAFKA_BOOTSTRAP": boot, "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix}
    shown = itsmctl("cmdb", "show", "db-1", "-o", "json", **env)
    assert shown.returncode == 0, shown.stderr
    fields = {f["field"]: f for f in json.loads(shown.stdout)["fields"]}
    assert (fields["hostname"]["value"], fields["hostname"]["source"]) == ("db-1.prod", "discovery")
    assert (fields["service"]["value"], fields["service"]["source"]) == ("ledger", "terraform")
    assert (fields["owner_group"]["value"], fields["owner_group"]["source"]) == (
        "team-web",
        "servicenow-cmdb",
    )
    assert 50 <= fields["service"]["age_seconds"] <= 600  # terraform reported it a minute before now
    text_out = itsmctl("cmdb", "show", "db-1", **env)
    assert text_out.returncode == 0 and "discovery" in text_out.stdout and "ledger" in text_out.stdout
    missing = itsmctl("cmdb", "show", "no-such-ci", **env)
    assert missing.returncode == 1 and "no CI 'no-such-ci'" in missing.stderr


def test_a_batch_import_whose_relationships_arrive_first_keeps_referential_integrity(
    stack: Stack, kafka_settings: Settings, itsmctl: Any, tmp_path: Path
) -> None:
    """An export listing app-1 (RUNS_ON web-9), a CI pointing at one that never comes and a row that
    is no CI, imported in chunks of 2 while web-9 comes in a later import: the worker parks app-1
    until web-9 is in the CMDB, dead-letters db-1 after park_timeout, and the bad row is named, not
    published."""
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    header = "ci_id,name,ci_class,hostname,ip_addresses,service,owner_group,relationships,attributes.tier\n"
    first = tmp_path / "cis.csv"
    first.write_text(
        header
        + "app-1,app-1,cmdb_ci_app_server,app-1.example.com,10.0.0.11,checkout,team-web,RUNS_ON:web-9,2\n"
        "db-1,db-1,cmdb_ci_db_instance,,,billing,team-db,DEPENDS_ON:no-such-ci,\n"
        ",nameless,server,,,,team-web,,\n"
    )
    later = tmp_path / "more.csv"
    later.write_text(
        header
        + "web-9,web-9,cmdb_ci_linux_server,web-9.example.com,10.0.0.9;10.0.0.19,checkout,team-web,,1\n"
    )
    env = {"ITSM_KAFKA_BOOTSTRAP": boot, "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix}
    ran = itsmctl("cmdb", "import", str(first), "--source", "discovery", "--chunk", "2", **env)
    assert ran.returncode == 1, ran.stderr  # one row was no CI
    assert "line 4: ci_id" in ran.stderr and "2 published, 0 rejected" in ran.stderr
    assert "3 row(s) read, 2 CI update(s) published" in ran.stdout and "1 rejected" in ran.stdout
    stack.start(["worker"])
    metrics = f"http://127.0.0.1:{stack.worker_metrics_port}/metrics"

    def counted(outcome: str, n: int) -> None:
        line = f'itsm_pipeline_change_inputs_total{{input="ci_update",outcome="{outcome}"}} {n}.0'
        deadline = time.monotonic() + 90
        while True:
            try:
                if line in httpx.get(metrics).text:
                    return
            except httpx.TransportError:
                pass  # the worker is starting
            assert time.monotonic() < deadline, f"the worker never counted {line}"
            time.sleep(0.5)

    counted("parked", 2)  # app-1 and db-1 wait for CIs the CMDB does not have
    assert consume(boot, t("cmdb.ci"), 1, timeout=3) == []
    assert itsmctl("cmdb", "import", str(later), "--source", "discovery", **env).returncode == 0
    written = sorted(consume(boot, t("cmdb.ci"), 2, timeout=90), key=lambda m: m.timestamp()[1])
    accepted = decode_all(written, ConfigurationItem)
    assert [c.ci_id for c in accepted] == ["web-9", "app-1"]  # app-1 went on once web-9 was in
    counted("unparked", 1)
    assert accepted[0].ip_addresses == ["10.0.0.9", "10.0.0.19"] and accepted[1].attributes == {"tier": "2"}
    assert accepted[1].relationships[0].target_ci_id == "web-9"
    (dead,) = consume(boot, t("cmdb.ci.updates.dlq"), 1, timeout=60)
    reason = header_map(dead.headers())["dlq.exception.message"]
    assert "no-such-ci" in reason and "referential integrity" in reason and dead.key() == b"db-1"
    bad = itsmctl("cmdb", "import", str(tmp_path / "none.csv"), "--source", "discovery", **env)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    ungranted = itsmctl("cmdb", "import", str(first), "--source", "spreadsheet", **env)
    assert ungranted.returncode == 2 and "no grant" in ungranted.stderr
