"""The incident sink against a slow ITSM and poison commands, on the real broker: every command
ends in the ITSM exactly once or dead-lettered with its reason, and the sink never stops."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.dlq import header_map
from streams.core.models import IncidentAction, IncidentCommand
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.integration.test_sink_delivery import commands, incident_count
from tests.kafka_util import consume, kafka_env, produce

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SERDE = AvroSerde()


def faulty_stack(broker: Broker, s: Settings, tmp_path: Path, **env: str) -> Stack:
    stack = Stack(
        tmp_path / "stack",
        broker.bootstrap,
        kafka_env=kafka_env(broker.bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_DEVITSM_FAULT_INJECTION": "true", **env},
    )
    stack.start(["devitsm", "sink"])
    return stack


def wait_for_rows(stack: Stack, rows: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while incident_count(stack)[0] < rows:
        stack.check_alive()
        assert time.monotonic() < deadline, stack.log_tail("sink")
        time.sleep(0.5)


def test_a_slow_itsm_delays_commands_but_loses_and_doubles_none(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    stack = faulty_stack(kafka_broker, s, tmp_path)
    try:
        # The next 8 API calls each take 2 s (the sink's HTTP timeout is 10 s).
        assert httpx.post(f"{stack.devitsm_url}/__faults", json={"delay": 2, "count": 8}).status_code == 200
        started = time.monotonic()
        produce(s.kafka_bootstrap, s.topic("itsm.incident.commands"), commands(60, "slow"))
        wait_for_rows(stack, 60, timeout=120)
        assert time.monotonic() - started >= 8  # the delays happened
        time.sleep(2)
        assert incident_count(stack) == (60, 60)
        assert consume(s.kafka_bootstrap, s.topic("itsm.incident.commands.dlq"), 1, timeout=3) == []
    finally:
        assert stack.stop() == {"sink": 0, "devitsm": 0}


def test_poison_commands_are_dead_lettered_with_reasons_and_the_rest_delivered(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    topic = s.topic("itsm.incident.commands")
    # One command at a time, so the queued fault meets the command the test means (with lanes, a
    # command of another correlation id could take it).
    stack = faulty_stack(kafka_broker, s, tmp_path, ITSM_SINK_CONCURRENCY="1")
    now = datetime.now(UTC)
    # A foreign producer's command: a correlation id no ITSM field or URL can carry. model_copy
    # skips validation, as a producer without our models would.
    valid = IncidentCommand(
        command_id="c-long",
        correlation_id="x",
        action=IncidentAction.OPEN,
        short_description="long id",
        issued_at=now,
    )
    long_id = SERDE.encode(valid.model_copy(update={"correlation_id": "L" * 70_000}))
    try:
        produce(s.kafka_bootstrap, topic, commands(5, "before"))
        wait_for_rows(stack, 5, timeout=60)
        # The ITSM refuses the next call (a permanent 400) whatever the command is.
        assert (
            httpx.post(f"{stack.devitsm_url}/__faults", json={"status": 400, "count": 1}).status_code == 200
        )
        poison = [
            (b"refused", SERDE.encode(valid.model_copy(update={"correlation_id": "refused-1"})), []),
            (b"long", long_id, []),
            (b"junk", b"\x00\x01 not avro", []),
            (b"empty", b"", []),
        ]
        # One partition, so the refused command is the first API call after the fault is queued.
        produce(s.kafka_bootstrap, topic, [*poison, *commands(5, "after")], partition=0)
        wait_for_rows(stack, 10, timeout=60)
        letters = consume(s.kafka_bootstrap, s.topic("itsm.incident.commands.dlq"), 4, timeout=30)
        reasons = {m.key(): header_map(m.headers() or []) for m in letters}
        assert set(reasons) == {b"refused", b"long", b"junk", b"empty"}
        assert reasons[b"refused"]["dlq.error.class"] == "validation"
        assert "HTTP 400" in reasons[b"refused"]["dlq.exception.message"]
        assert reasons[b"long"]["dlq.error.class"] == "validation"
        assert reasons[b"junk"]["dlq.error.class"] == "schema"
        time.sleep(2)
        rows, distinct = incident_count(stack)
        assert (rows, distinct) == (10, 10)  # the 10 valid commands, each once
    finally:
        assert stack.stop() == {"sink": 0, "devitsm": 0}
