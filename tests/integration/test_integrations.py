"""The integration inventory against the real broker: an audit that finds a consumer group, a
producer and unattributed records nobody declared, and a retirement that archives, deletes the
group and marks the inventory (refused while a consumer is connected)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from ops.integrations import DEFAULT
from streams.core.models import AuditEvent
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.kafka_util import conf, consume, produce

pytestmark = pytest.mark.integration


def joined(bootstrap: str, group: str, topic: str) -> Consumer:
    """A consumer that joined group on topic and committed an offset (a live member)."""
    consumer = Consumer(
        conf(bootstrap, {"group.id": group, "auto.offset.reset": "earliest", "client.id": group})
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            consumer.commit(msg, asynchronous=False)
            return consumer
    consumer.close()
    raise AssertionError(f"{group} never got a record of {topic}")


@pytest.fixture
def env(kafka_settings: Settings) -> dict[str, str]:
    return {
        "ITSM_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "ITSM_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ITSM_APP_ID": kafka_settings.app_id,
    }


@pytest.fixture
def rogue(kafka_settings: Settings) -> Iterator[str]:
    """An ETL job nobody declared, consuming alerts.raw as its own group."""
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    produce(boot, t("alerts.raw"), [(b"k", b"v", [("itsm.producer", b"gateway")])])
    group = f"etl-nightly-{uuid.uuid4().hex[:6]}"
    consumer = joined(boot, group, t("alerts.raw"))
    yield group
    consumer.close()


def test_the_audit_finds_a_consumer_group_and_producers_nobody_declared(
    kafka_settings: Settings, env: dict[str, str], rogue: str, itsmctl: Itsmctl
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    produce(boot, t("cmdb.ci.updates"), [(b"ci", b"x", [("itsm.producer", b"spreadsheet-sync")])])
    produce(boot, t("itsm.results"), [(b"r", b"x", [])])  # no producer header: written from outside
    produce(boot, t("deploy.events"), [(b"d", b"x", [])])  # an external write the inventory declares
    ran = itsmctl("integrations", "audit", "-o", "json", **env)
    assert ran.returncode == 1, ran.stderr
    report = json.loads(ran.stdout)
    found = {(f["kind"], f["subject"]): f for f in report["findings"]}
    assert ("shadow_group", rogue) in found
    assert rogue in found[("shadow_group", rogue)]["detail"]  # its member's client id
    assert ("shadow_producer", t("cmdb.ci.updates")) in found
    assert "spreadsheet-sync" in found[("shadow_producer", t("cmdb.ci.updates"))]["detail"]
    assert ("shadow_producer", t("itsm.results")) in found
    assert ("shadow_producer", t("deploy.events")) not in found
    assert ("shadow_producer", t("alerts.raw")) not in found  # gateway is declared
    # Nothing of this test's deployment consumes: the sinks and the worker are idle (dead),
    # alert ingest is not (its producer wrote a minute ago), nor are the delivery pipelines.
    dead = {f["subject"] for f in report["findings"] if f["kind"] == "dead"}
    assert {"stream-worker", "servicenow", "jira"} <= dead
    assert "alert-ingest" not in dead and "delivery-pipelines" not in dead
    assert report["live"]["acls"] is True  # the secured broker's grants were compared
    text = itsmctl("integrations", "audit", **env)
    assert text.returncode == 1 and f"shadow consumer group: {rogue}" in text.stdout


def test_retiring_an_integration_archives_its_topic_deletes_its_group_and_marks_it(
    kafka_settings: Settings, env: dict[str, str], itsmctl: Itsmctl, tmp_path: Path
) -> None:
    boot, t = kafka_settings.kafka_bootstrap, kafka_settings.topic
    group = f"legacy-export-{uuid.uuid4().hex[:6]}"
    inventory = tmp_path / "integrations.toml"
    inventory.write_text(
        DEFAULT.read_text().replace(  # servicenow no longer writes itsm.incidents: only legacy-export does
            '"itsm.changes", "itsm.incidents", "maintenance.windows",',
            '"itsm.changes", "maintenance.windows",',
        )
        + f"""
[[integration]]
name = "legacy-export"
owner = "team-old"
business_service = "reporting"
status = "deprecated"
serves = ["incident management"]
reads = ["itsm.incidents"]
writes = ["itsm.incidents"]
consumer_groups = ["{group}"]
"""
    )
    records = [(f"k{n}".encode(), f"v{n}".encode(), [("itsm.producer", b"legacy")]) for n in range(7)]
    produce(boot, t("itsm.incidents"), records)
    consumer = joined(boot, group, t("itsm.incidents"))
    args = (
        "integrations",
        "retire",
        "legacy-export",
        "--file",
        str(inventory),
        "--archive-dir",
        str(tmp_path / "a"),
    )
    busy = itsmctl(*args, "--actor", "ops-lead", **env)
    assert busy.returncode == 1 and "still connected" in busy.stderr and group in busy.stderr
    consumer.close()
    dry = itsmctl(*args, "--dry-run", **env)
    assert dry.returncode == 0 and t("itsm.incidents") in dry.stdout and group in dry.stdout
    assert not (tmp_path / "a").exists()

    done = itsmctl(*args, "--actor", "ops-lead", **env)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "a" / f"{t('itsm.incidents')}.avro", "rb") as f:
        archived = list(fastavro.reader(f))
    assert sorted((r["key"], r["value"]) for r in archived) == sorted((k, v) for k, v, _ in records)
    assert all(r["headers"] == [{"name": "itsm.producer", "value": b"legacy"}] for r in archived)
    admin = AdminClient(conf(boot))
    groups = {g.group_id for g in admin.list_consumer_groups(request_timeout=15).result().valid}
    assert group not in groups
    assert 'status = "retired"' in inventory.read_text().split('name = "legacy-export"')[1]
    (event,) = [
        e
        for e in (
            AvroSerde().decode(m.value(), AuditEvent) for m in consume(boot, t("audit.events"), 1, timeout=30)
        )
        if e.action == "integration.retired"
    ]
    assert (event.actor, event.subject_id) == ("ops-lead", "legacy-export")
    assert event.details["archived"] == "itsm.incidents=7" and event.details["consumer_groups"] == group
    assert event.occurred_at <= datetime.now(UTC)
    unknown = itsmctl("integrations", "retire", "nobody", **env)
    assert unknown.returncode == 2 and "no integration 'nobody'" in unknown.stderr
