"""`topics apply` on the real broker: creates, is idempotent, repairs drift, reports what Kafka cannot fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions

from ops import topics as topic_ops
from ops.kafka import Broker
from streams.core.topics import declared
from tests.kafka_util import conf

pytestmark = pytest.mark.integration


def test_apply_creates_then_is_idempotent_then_repairs_drift(kafka_broker: Broker, prefix: str) -> None:
    admin = AdminClient(conf(kafka_broker.bootstrap))
    specs = list(declared(prefix))
    first = topic_ops.apply(admin, specs)
    assert {s.action for s in first} == {"created"} and len(first) == len(specs) == len(list(declared()))
    assert {s.action for s in topic_ops.apply(admin, specs)} == {"ok"}
    assert {s.action for s in topic_ops.inspect(admin, specs)} == {"ok"}

    cmdb, raw = prefix + "cmdb.ci", prefix + "alerts.raw"
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        cmdb,
        incremental_configs=[
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result()
    for fut in admin.create_partitions([NewPartitions(raw, 8)]).values():
        fut.result()

    # Metadata reaches the broker's cache asynchronously: wait until both our changes show (the
    # config and the partition count travel separately; waiting for one only was flaky).
    deadline = time.monotonic() + 20
    while True:
        seen = {s.name: s for s in topic_ops.inspect(admin, specs)}
        both = seen[cmdb].action == "drifted" and seen[raw].action == "drifted"
        if both or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert seen[cmdb].action == "drifted" and "cleanup.policy: delete -> compact" in seen[cmdb].detail
    assert seen[raw].action == "drifted" and "cannot shrink" in seen[raw].detail
    repaired = {s.name: s for s in topic_ops.apply(admin, specs)}
    assert repaired[cmdb].action == "altered"
    assert repaired[raw].action == "cannot-fix"
    deadline = time.monotonic() + 20
    while True:
        after = {s.name: s.action for s in topic_ops.inspect(admin, specs)}
        if after[cmdb] == "ok" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after[cmdb] == "ok" and after[raw] == "drifted"


def test_itsmctl_topics_commands_report_and_exit_codes(kafka_broker: Broker, prefix: str) -> None:
    env = {**os.environ, "ITSM_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "ITSM_TOPIC_PREFIX": prefix}
    listed = subprocess.run(
        [sys.executable, "-m", "ops.cli", "topics", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 1 and listed.stdout.count("missing") == len(list(declared()))
    applied = subprocess.run(
        [sys.executable, "-m", "ops.cli", "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert f"{prefix}alerts.raw.dlq" in applied.stdout and applied.stdout.count("created") == len(
        list(declared())
    )
    again = subprocess.run(
        [sys.executable, "-m", "ops.cli", "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and again.stdout.count(" ok ") == len(list(declared()))


def test_a_stale_metadata_read_never_reports_an_existing_topic_as_created(
    kafka_broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = AdminClient(conf(kafka_broker.bootstrap))
    specs = list(declared(prefix))
    topic_ops.apply(admin, specs)
    real = topic_ops._actual
    calls = {"n": 0}

    def stale_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return ({}, {}) if calls["n"] == 1 else real(*args, **kwargs)

    monkeypatch.setattr(topic_ops, "_actual", stale_once)
    states = topic_ops.apply(admin, specs)
    assert {s.action for s in states} == {"ok"} and len(states) == len(specs)
