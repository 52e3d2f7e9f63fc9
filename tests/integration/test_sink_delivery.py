"""Sink delivery on the real broker: through an ITSM outage, within a rate limit, nothing lost or doubled."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ops.kafka import Broker
from ops.stack import Stack
from streams.core.models import IncidentAction, IncidentCommand
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import consume, kafka_env, produce

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def commands(n: int, prefix: str) -> list[tuple[bytes, bytes, list]]:  # type: ignore[type-arg]
    now = datetime.now(UTC)
    return [
        (
            f"{prefix}{i:05d}".encode(),
            SERDE.encode(
                IncidentCommand(
                    command_id=f"c-{prefix}{i}",
                    correlation_id=f"{prefix}{i:05d}",
                    action=IncidentAction.OPEN,
                    short_description=f"load {i}",
                    issued_at=now,
                )
            ),
            [],
        )
        for i in range(n)
    ]


def incident_count(stack: Stack) -> tuple[int, int]:
    """(rows, distinct correlation ids) in the ITSM."""
    with stack.itsm() as itsm:
        rows = itsm.get("/api/now/table/incident", params={"sysparm_fields": "correlation_id"}).json()[
            "result"
        ]
    return len(rows), len({r["correlation_id"] for r in rows})


def test_an_itsm_outage_of_30_seconds_loses_nothing_and_doubles_nothing(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    stack = Stack(
        tmp_path / "stack",
        kafka_broker.bootstrap,
        kafka_env=kafka_env(kafka_broker.bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_SINK_BACKOFF_MAX_SECONDS": "2"},
    )
    stack.start(["devitsm", "sink"])
    total = 2000
    produce(s.kafka_bootstrap, s.topic("itsm.incident.commands"), commands(total, "out"))
    try:
        deadline = time.monotonic() + 120
        while incident_count(stack)[0] < 300:
            assert time.monotonic() < deadline, stack.log_tail("sink")
            time.sleep(0.2)
        assert stack.stop_one("devitsm") == 0
        down_at = time.monotonic()
        time.sleep(30)  # the ITSM is down; the sink keeps retrying the command it holds
        stack.start(["devitsm"])
        outage = time.monotonic() - down_at
        deadline = time.monotonic() + 180
        while incident_count(stack)[0] < total:
            stack.check_alive()
            assert time.monotonic() < deadline, stack.log_tail("sink")
            time.sleep(0.5)
        time.sleep(2)
        rows, distinct = incident_count(stack)
        assert (rows, distinct) == (total, total)  # every command arrived, none twice
        assert outage >= 30
        assert consume(s.kafka_bootstrap, s.topic("itsm.incident.commands.dlq"), 1, timeout=3) == []
        assert "retrying" in (stack.workdir / "logs" / "sink.log").read_text()
    finally:
        stack.stop()


def test_within_a_rate_limit_goodput_is_near_the_limit_and_refusals_are_rare(
    kafka_broker: Broker, kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    limit, total = 20, 200  # 200 commands = 400 requests (lookup + create): about 20 s at 20/s
    stack = Stack(
        tmp_path / "stack",
        kafka_broker.bootstrap,
        kafka_env=kafka_env(kafka_broker.bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_DEVITSM_RATE_LIMIT": str(limit), "ITSM_SINK_RATE_LIMIT_RPS": str(limit)},
    )
    stack.start(["devitsm", "sink"])
    try:
        produce(s.kafka_bootstrap, s.topic("itsm.incident.commands"), commands(total, "rl"))
        # Measured from the sink's results (broker timestamps), not by polling the limited ITSM.
        results = consume(s.kafka_bootstrap, s.topic("itsm.results"), total, timeout=120)
        assert len(results) == total, stack.log_tail("sink")
        stamps = sorted(r.timestamp()[1] / 1000 for r in results)
        elapsed = stamps[-1] - stamps[0]
        goodput = 2 * (total - 1) / elapsed  # each command is a lookup and a create
        metrics = httpx.get(f"{stack.devitsm_url}/metrics").text
        counts = dict(
            re.findall(r'itsm_pipeline_devitsm_requests_total\{outcome="(\w+)"\} ([\d.e+]+)', metrics)
        )
        accepted, refused = float(counts.get("accepted", 0)), float(counts.get("refused", 0))
        print(
            f"rate limit {limit}/s: goodput {goodput:.1f} req/s over {elapsed:.1f}s, "
            f"accepted {accepted:.0f}, refused {refused:.0f}"
        )
        assert goodput >= 0.9 * limit
        assert refused < 0.01 * (accepted + refused)
        time.sleep(1.1)  # a fresh rate-limit window for the check below
        assert incident_count(stack) == (total, total)
    finally:
        stack.stop()


def test_a_restarted_sink_finds_its_records_by_the_ids_in_itsm_results(
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
    )
    stack.start(["devitsm", "sink"])
    try:
        produce(s.kafka_bootstrap, topic, commands(5, "kn"))
        assert len(consume(s.kafka_bootstrap, s.topic("itsm.results"), 5, timeout=60)) == 5
        assert stack.stop_one("sink") == 0
        now = datetime.now(UTC)
        updates = [
            (
                f"kn{i:05d}".encode(),
                SERDE.encode(
                    IncidentCommand(
                        command_id=f"u-{i}",
                        correlation_id=f"kn{i:05d}",
                        action=IncidentAction.UPDATE,
                        short_description="again",
                        work_note="repeat",
                        issued_at=now,
                    )
                ),
                [],
            )
            for i in range(5)
        ]
        produce(s.kafka_bootstrap, topic, updates)
        stack.start(["sink"])
        assert len(consume(s.kafka_bootstrap, s.topic("itsm.results"), 10, timeout=60)) == 10
        metrics = httpx.get(f"http://127.0.0.1:{stack.sink_metrics_port}/metrics").text
        known = re.search(
            r'itsm_pipeline_sink_lookups_total\{target="servicenow",via="known"\} ([\d.]+)', metrics
        )
        assert known and float(known.group(1)) == 5.0, metrics[-2000:]
        assert '"known_ids": 5' in (stack.workdir / "logs" / "sink.log").read_text()
        assert incident_count(stack) == (5, 5)
    finally:
        stack.stop()
