"""Commands the ITSM rejects land in the DLQ with the reason, the stream goes on, and replay delivers them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.dlq import header_map
from streams.core.models import AuditEvent, IncidentAction, IncidentCommand
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume, kafka_env, produce

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def cmd(cid: str, group: str) -> tuple[bytes, bytes, list]:  # type: ignore[type-arg]
    return (
        cid.encode(),
        SERDE.encode(
            IncidentCommand(
                command_id=f"c-{cid}",
                correlation_id=cid,
                action=IncidentAction.OPEN,
                short_description=f"cmd {cid}",
                assignment_group=group,
                issued_at=datetime.now(UTC),
            )
        ),
        [],
    )


def itsmctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ITSM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ITSM_TOPIC_PREFIX": settings.topic_prefix,
        "USER": "operator-7",
    }
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def correlation_ids(stack: Stack) -> list[str]:
    with stack.itsm() as itsm:
        rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "correlation_id"}).json()[
            "result"
        ]
    return sorted(r["correlation_id"] for r in rows)


def add_group(stack: Stack, name: str) -> None:
    """A group created by the ITSM's administrator (groups are user_admin's, not the sink's)."""
    auth = ("admin", stack.admin_password_file.read_text())
    made = httpx.post(f"{stack.devitsm_url}/api/now/table/sys_user_group", json={"name": name}, auth=auth)
    assert made.status_code == 201, made.text


def wait_for(n: int, stack: Stack) -> list[str]:
    deadline = time.monotonic() + 90
    while len(ids := correlation_ids(stack)) < n:
        stack.check_alive()
        assert time.monotonic() < deadline, stack.log_tail("sink")
        time.sleep(0.3)
    return ids


def test_rejected_commands_are_dead_lettered_then_replayed_once_the_cause_is_fixed(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    topic = s.topic("itsm.incident.commands")
    stack = Stack(
        tmp_path / "stack",
        kafka_broker.bootstrap,
        kafka_env=kafka_env(kafka_broker.bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        # A data policy of the ITSM: an incident must have an assignment group. The sink binds the
        # group's name to its sys_id; "db-team" does not exist, so its incidents have none and are
        # refused (403 "Data Policy Exception"), until an administrator creates the group.
        extra_env={
            "ITSM_DEVITSM_MANDATORY": "incident.assignment_group",
            "ITSM_SERVICENOW_REFERENCE_MISS_TTL_SECONDS": "0",
        },
    )
    stack.start(["devitsm"])
    add_group(stack, "ops")
    stack.start(["sink"])
    try:
        records = [cmd(f"good-{i:02d}", "ops") for i in range(10)]
        records += [cmd(f"db-{i}", "db-team") for i in range(5)]
        records += [cmd(f"good-{i:02d}", "ops") for i in range(10, 20)]
        produce(s.kafka_bootstrap, topic, records, partition=0)
        # The stream behind the rejected commands keeps flowing.
        assert wait_for(20, stack) == sorted(f"good-{i:02d}" for i in range(20))
        dead = consume(s.kafka_bootstrap, topic + ".dlq", 5, timeout=30)
        assert len(dead) == 5
        for msg in dead:
            h = header_map(msg.headers())
            assert h["dlq.error.class"] == "validation" and h["dlq.stage"] == "sink.servicenow"
            assert "The following fields are mandatory: assignment_group" in h["dlq.exception.message"]

        listed = itsmctl(s, "dlq", "list")
        assert f"{topic}.dlq" in listed.stdout and " 5 record(s)" in listed.stdout
        stats = itsmctl(s, "dlq", "stats", "itsm.incident.commands.dlq")
        assert "5 dead letter(s)" in stats.stdout and "validation" in stats.stdout, stats.stderr
        shown = itsmctl(s, "dlq", "show", "itsm.incident.commands.dlq", "--key", "db-3")
        assert "key='db-3'" in shown.stdout and shown.stdout.count("class=validation") == 1
        dry = itsmctl(
            s, "dlq", "replay", "itsm.incident.commands.dlq", "--error-class", "validation", "--dry-run"
        )
        assert "would replay 5 of 5" in dry.stdout
        assert len(correlation_ids(stack)) == 20  # a dry run sends nothing

        # The cause is fixed: the group now exists in the ITSM.
        add_group(stack, "db-team")
        replayed = itsmctl(s, "dlq", "replay", "itsm.incident.commands.dlq", "--error-class", "validation")
        assert replayed.returncode == 0 and "replayed 5 of 5" in replayed.stdout, replayed.stderr
        assert "replayed 5/5 (100%)" in replayed.stderr  # progress
        ids = wait_for(25, stack)
        assert ids == sorted([f"good-{i:02d}" for i in range(20)] + [f"db-{i}" for i in range(5)])

        # A record replayed once is not replayed twice.
        again = itsmctl(s, "dlq", "replay", "itsm.incident.commands.dlq")
        assert "replayed 0 of 5" in again.stdout and "5 already replayed before" in again.stdout
        time.sleep(2)
        assert len(correlation_ids(stack)) == 25
        audit = [
            SERDE.decode(m.value(), AuditEvent)
            for m in consume(s.kafka_bootstrap, s.topic("audit.events"), 3, timeout=10)
        ]
        assert [a.action for a in audit] == ["dlq.replay", "dlq.replay"] and audit[0].actor == "operator-7"
        assert [a.reason for a in audit] == [
            "replayed 5 of 5 selected dead letter(s)",
            "replayed 0 of 5 selected dead letter(s)",
        ]
        assert audit[1].details["skipped_already_replayed"] == "5"
    finally:
        stack.stop()
