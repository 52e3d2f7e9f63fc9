"""Brokers SIGKILLed mid-stream lose no alert: a single broker killed and restarted, and one node of
a three-broker KRaft cluster (replication 3, min.insync.replicas 2) killed while the others serve."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from ops import topics as topic_ops
from ops.kafka import Broker
from ops.kafka.broker import cluster, free_port
from ops.stack import Stack
from streams.core.settings import Settings
from streams.core.topics import declared
from tests.chaos.common import SteadyStream, outcome
from tests.kafka_util import conf, kafka_env

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def settings_on(bootstrap: str, replication: int = 1) -> Settings:
    s = Settings(
        kafka_bootstrap=bootstrap, topic_prefix="chaos.", app_id="chaos-app", topic_replication=replication
    )
    states = topic_ops.apply(AdminClient(conf(bootstrap)), list(declared(s.topic_prefix)), replication)
    assert all(st.action == "created" for st in states), states
    return s


@pytest.mark.timeout(600)
def test_a_broker_killed_and_restarted_mid_stream_loses_no_alert(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start(wait=120)
    try:
        s = settings_on(broker.bootstrap)
        stack = Stack(tmp_path / "stack", broker.bootstrap, topic_prefix=s.topic_prefix, app_id=s.app_id)
        stack.start(["worker"])
        stream = SteadyStream(
            s.kafka_bootstrap, s.topic("alerts.raw"), [f"b-{i:05d}" for i in range(800)], 40
        )
        try:
            time.sleep(6)
            stream.start()
            time.sleep(10)
            assert broker.kill()
            time.sleep(8)  # producer and worker wait for the broker; nothing is acknowledged meanwhile
            broker.start(wait=120)
            stream.join()
            got = outcome(s, stream, timeout=180)
            stack.check_alive()  # the worker rode out the outage
        finally:
            codes = stack.stop()
        print(f"broker killed and restarted: {got.summary()}")
        assert codes == {"worker": 0}
        assert got.dead == 0 and not got.missing, (got.summary(), got.missing[:20])
    finally:
        broker.stop()


@pytest.fixture
def three_brokers(tmp_path: Path) -> Iterator[list[Broker]]:
    nodes = cluster(tmp_path / "cluster", nodes=3)
    try:
        for node in nodes:
            node.start(block=False)
        for node in nodes:
            deadline = time.monotonic() + 120
            while not node.answers(timeout=1.0):
                assert time.monotonic() < deadline, "the three-node cluster did not come up"
                time.sleep(0.5)
        yield nodes
    finally:
        for node in nodes:
            node.kill()  # a throwaway cluster: no controlled shutdown to wait for


@pytest.mark.timeout(600)
def test_one_of_three_brokers_killed_mid_stream_loses_no_alert(three_brokers: list[Broker]) -> None:
    bootstrap = ",".join(n.bootstrap for n in three_brokers)
    s = settings_on(bootstrap, replication=3)
    workdir = three_brokers[0].data_dir.parent / "stack"
    stack = Stack(
        workdir,
        bootstrap,
        kafka_env=kafka_env(bootstrap),
        topic_prefix=s.topic_prefix,
        app_id=s.app_id,
        extra_env={"ITSM_TOPIC_REPLICATION": "3"},
    )
    stack.start(["worker", "worker-2"])
    stream = SteadyStream(bootstrap, s.topic("alerts.raw"), [f"c-{i:05d}" for i in range(800)], 40)
    try:
        time.sleep(8)
        stream.start()
        time.sleep(10)
        # The node that leads the most partitions of alerts.raw: leadership must move.
        meta = AdminClient(conf(bootstrap)).list_topics(s.topic("alerts.raw"), timeout=10)
        leaders = [p.leader for p in meta.topics[s.topic("alerts.raw")].partitions.values()]
        victim = three_brokers[max(set(leaders), key=leaders.count) - 1]
        assert victim.kill()
        stream.join()  # acks=all keeps working with 2 of 3 in sync (min.insync.replicas 2)
        got = outcome(s, stream, timeout=180)
        stack.check_alive()
    finally:
        codes = stack.stop()
    print(f"one of three brokers killed (node {victim.node_id}): {got.summary()}")
    assert codes == {"worker": 0, "worker-2": 0}
    assert got.dead == 0 and not got.missing, (got.summary(), got.missing[:20])
