"""The sink's lanes on the real broker: commands of different correlation ids in flight at once,
each id's commands in order, a full lane pausing its partition (nothing lost, nothing twice), and
the committed offsets covering only finished commands."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.sinks import runner as runner_module
from connectors.sinks.runner import SinkRunner
from streams.core.models import (
    ChangeCommand,
    IncidentAction,
    IncidentCommand,
    RecordType,
    SinkOutcome,
    SinkResult,
)
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from tests.kafka_util import conf, consume, produce

pytestmark = pytest.mark.integration
ACTIONS = [IncidentAction.OPEN, IncidentAction.UPDATE, IncidentAction.UPDATE, IncidentAction.RESOLVE]


class SlowTarget:
    """A target that takes a few milliseconds per command and records what it got, in order."""

    name = "slow"

    def __init__(self, seen: dict[str, list[str]], active: list[int], lock: threading.Lock) -> None:
        self.seen, self.active, self.lock = seen, active, lock

    def handle_incident(self, cmd: IncidentCommand) -> SinkResult:
        with self.lock:
            self.active[0] += 1
            self.active[1] = max(self.active[1], self.active[0])
        time.sleep(random.uniform(0.002, 0.01))
        with self.lock:
            self.seen[cmd.correlation_id].append(cmd.command_id)
            self.active[0] -= 1
        return SinkResult(
            command_id=cmd.command_id,
            correlation_id=cmd.correlation_id,
            target=self.name,
            record_type=RecordType.INCIDENT,
            outcome=SinkOutcome.UPDATED,
            completed_at=datetime.now(UTC),
        )

    def handle_change(self, cmd: ChangeCommand) -> SinkResult:
        raise AssertionError("no change commands here")


def test_lanes_deliver_concurrently_in_order_per_id_and_a_full_lane_pauses_its_partition(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Full lanes and a short wait behind them, so partitions get paused.
    monkeypatch.setattr(runner_module, "LANE_DEPTH", 2)
    monkeypatch.setattr(runner_module, "HELD_MAX", 4)
    serde, now = AvroSerde(), datetime.now(UTC)
    ids = [f"itsmp-lane-{i:03d}" for i in range(50)]
    records = []
    for step, action in enumerate(ACTIONS):
        for cid in ids:
            cmd = IncidentCommand(
                command_id=f"{cid}/{step}",
                correlation_id=cid,
                action=action,
                short_description="Disk full",
                issued_at=now,
            )
            records.append((cid.encode(), serde.encode(cmd), []))
    s = kafka_settings
    produce(s.kafka_bootstrap, s.topic("itsm.incident.commands"), records)

    seen: dict[str, list[str]] = defaultdict(list)
    active, lock = [0, 0], threading.Lock()
    sinks = [SlowTarget(seen, active, lock) for _ in range(4)]
    runner = SinkRunner(s, serde, sinks[0], RecordType.INCIDENT, more=sinks[1:])  # type: ignore[arg-type]
    pauses: list[int] = []
    pause = runner.consumer.pause

    def counting_pause(partitions: list[TopicPartition]) -> None:
        pauses.extend(tp.partition for tp in partitions)
        pause(partitions)

    runner.consumer = _Wrapped(runner.consumer, counting_pause)  # type: ignore[assignment]
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while runner.processed < len(records) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(60)

    assert runner.processed == len(records)
    # Every command once, and each correlation id's commands in the order they were issued.
    assert {cid: seen[cid] for cid in ids} == {
        cid: [f"{cid}/{n}" for n in range(len(ACTIONS))] for cid in ids
    }
    assert active[1] > 1  # commands of different ids were in flight at once
    assert pauses  # a full lane paused its partition instead of the consumer waiting on it
    # Not a pause per command (each makes librdkafka fetch the partition again): a partition is
    # paused once HELD_MAX of its commands wait, and resumed when they are all handed over.
    assert len(pauses) <= len(records) // 4, len(pauses)
    results = consume(s.kafka_bootstrap, s.topic("itsm.results"), len(records), timeout=30)
    assert len(results) == len(records)
    # The group's committed offsets cover every command (each was finished before it counted).
    probe = Consumer(conf(s.kafka_bootstrap, {"group.id": f"{s.app_id}-sink-slow"}))
    topic = s.topic("itsm.incident.commands")
    try:
        committed = probe.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    finally:
        probe.close()
    assert sum(max(tp.offset, 0) for tp in committed) == len(records)


class _Wrapped:
    """The runner's consumer with pause() observed (everything else is the real consumer)."""

    def __init__(self, consumer: Consumer, pause: object) -> None:
        self._consumer, self.pause = consumer, pause

    def __getattr__(self, name: str) -> object:
        return getattr(self._consumer, name)
