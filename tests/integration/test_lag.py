"""Consumer lag on the real broker: records, seconds and which groups count, against hand-set offsets."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ops.lag import LagReader
from streams.core.settings import Settings
from tests.cli import Itsmctl
from tests.kafka_util import conf

pytestmark = pytest.mark.integration


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer(conf(bootstrap, {"group.id": group, "enable.auto.commit": False}))
    try:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


def test_lag_per_group_topic_and_partition_with_its_age(kafka_settings: Settings, itsmctl: Itsmctl) -> None:
    s = kafka_settings
    topic = s.topic("itsm.incident.commands")
    now_ms = int(time.time() * 1000)
    producer = Producer(conf(s.kafka_bootstrap))
    # Partition 0: 10 records, record i made (10 - i) minutes ago; partition 1: 4 records, 1 s apart.
    for i in range(10):
        producer.produce(topic, b"x", key=b"k", partition=0, timestamp=now_ms - (10 - i) * 60_000)
    for i in range(4):
        producer.produce(topic, b"y", key=b"k", partition=1, timestamp=now_ms - (4 - i) * 1_000)
    assert producer.flush(10) == 0

    sink_a, sink_b = f"{s.app_id}-sink-servicenow", f"{s.app_id}-sink-rt"
    commit(s.kafka_bootstrap, sink_a, {(topic, 0): 3, (topic, 1): 4})
    commit(s.kafka_bootstrap, sink_b, {(topic, 0): 8, (topic, 1): 1})
    commit(s.kafka_bootstrap, f"{s.app_id}-view-abc", {(topic, 0): 0})  # a view: not the pipeline's

    reader = LagReader(s)
    try:
        groups = [g.group for g in reader.groups()]
        assert groups == [sink_b, sink_a]  # sorted; the view is left out
        rows = {(r.group, r.partition): r for r in reader.lag(groups, now=now_ms / 1000)}
    finally:
        reader.close()
    assert {k: (r.current_offset, r.log_end_offset, r.lag) for k, r in rows.items()} == {
        (sink_a, 0): (3, 10, 7),
        (sink_a, 1): (4, 4, 0),
        (sink_b, 0): (8, 10, 2),
        (sink_b, 1): (1, 4, 3),
    }
    # The oldest unconsumed record: offset 3 was made 7 minutes ago, offset 8 2 minutes ago, and
    # partition 1's offset 1 three seconds ago; a partition without lag is 0 s behind.
    assert rows[(sink_a, 0)].lag_seconds == pytest.approx(420, abs=0.01)
    assert rows[(sink_b, 0)].lag_seconds == pytest.approx(120, abs=0.01)
    assert rows[(sink_b, 1)].lag_seconds == pytest.approx(3, abs=0.01)
    assert rows[(sink_a, 1)].lag_seconds == 0

    env = {"ITSM_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "ITSM_APP_ID": s.app_id}
    ran = itsmctl("lag", "-o", "json", **env)
    assert ran.returncode == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert {g["group"] for g in doc["groups"]} == {sink_a, sink_b}
    assert sum(p["lag"] for p in doc["partitions"]) == 12

    ran = itsmctl("lag", "--group", sink_a, **env)
    assert ran.returncode == 0, ran.stderr
    assert f"group {sink_a}: empty, 0 member(s), total lag 7" in ran.stdout
    line = next(x for x in ran.stdout.splitlines() if x.startswith(sink_a) and " 0 " in x)
    assert line.split()[2:6] == ["0", "3", "10", "7"]

    ran = itsmctl("lag", "--group", "nobody-here", **env)
    assert ran.returncode == 1
    assert "consumer group nobody-here does not exist" in ran.stderr
    assert "Traceback" not in ran.stderr


class CountingAdmin:
    """The reader's real admin client, counting its consumer group descriptions."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.describes: list[list[str]] = []

    def describe_consumer_groups(self, groups: list[str], **kwargs: Any) -> Any:
        self.describes.append(list(groups))
        return self.admin.describe_consumer_groups(groups, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.admin, name)


@pytest.mark.parametrize("after_groups", [False, True], ids=["lag_alone", "groups_then_lag"])
def test_a_member_that_never_committed_has_its_partitions_counted_from_the_start(
    kafka_settings: Settings, after_groups: bool
) -> None:
    """A new sink stuck on its first command (its ITSM down) has committed nothing: its group's
    partitions still show their lag, so PipelineStalled and ConsumerLagOld can see it. What its
    members hold is read from one description of the groups per refresh (groups() then lag(), as
    `itsmctl lag` and the status service ask), or from one of its own when lag() is asked alone."""
    s = kafka_settings
    topic = s.topic("itsm.change.commands")
    producer = Producer(conf(s.kafka_bootstrap))
    for i in range(5):
        producer.produce(topic, b"z", key=f"k{i}".encode())
    assert producer.flush(10) == 0
    group = f"{s.app_id}-sink-jira"
    member = Consumer(conf(s.kafka_bootstrap, {"group.id": group, "enable.auto.commit": False}))
    reader = LagReader(s)
    admin = reader.admin = CountingAdmin(reader.admin)  # type: ignore[assignment]
    try:
        member.subscribe([topic])
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        held = {(tp.topic, tp.partition) for tp in member.assignment()}
        assert held, "the member was never assigned its partitions"
        if after_groups:
            assert [g.members for g in reader.groups([group])] == [1]
        rows = {(r.topic, r.partition): r for r in reader.lag([group])}
        starts, ends = reader.start_offsets(held), reader.end_offsets(held)
        assert admin.describes == [[group]]
        reader.lag([group])  # a later refresh without groups() describes again
        assert admin.describes == [[group], [group]]
    finally:
        member.close()
        reader.close()
    assert set(rows) == held
    assert all(r.current_offset == -1 for r in rows.values())
    assert {tp: r.lag for tp, r in rows.items()} == {tp: ends[tp] - starts[tp] for tp in held}
    assert sum(r.lag for r in rows.values()) == 5
