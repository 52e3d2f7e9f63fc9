"""Global views of compacted topics on the real broker: wait for the topic, load, follow, delete."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from ops.kafka import Broker
from streams.core import models as m
from streams.core.follower import TopicFollower
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.processors.indexes import CMDBTopicIndex
from tests.kafka_util import conf, produce

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


def ci(ci_id: str, **kw: object) -> bytes:
    return SERDE.encode(
        m.ConfigurationItem(
            ci_id=ci_id,
            name=ci_id,
            ci_class="cmdb_ci_server",
            hostname=ci_id,
            source_system="t",
            updated_at=datetime.now(UTC),
            **kw,
        )
    )


def test_a_view_waits_for_its_topic_then_loads_follows_and_deletes(kafka_broker: Broker) -> None:
    topic = f"view-{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_bootstrap=kafka_broker.bootstrap, app_id="view-test")
    cmdb = CMDBTopicIndex(SERDE, topic)
    view = TopicFollower(settings, topic, cmdb.apply).start()
    try:
        time.sleep(1.5)  # the topic does not exist yet: the view must wait, not fail
        assert not view.ready.is_set() and view.failure is None
        admin = AdminClient(conf(kafka_broker.bootstrap))
        admin.create_topics([NewTopic(topic, 3, 1, config={"cleanup.policy": "compact"})])[topic].result()
        produce(
            kafka_broker.bootstrap, topic, [(b"a", ci("a"), []), (b"b", ci("b"), []), (b"junk", b"junk", [])]
        )
        view.wait_ready(30)
        deadline = time.monotonic() + 20
        while len(cmdb) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cmdb.lookup("hostname", "a.example.com:9100") is not None and len(cmdb) == 2
        produce(kafka_broker.bootstrap, topic, [(b"a", None, [])])  # tombstone
        deadline = time.monotonic() + 20
        while cmdb.get("a") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cmdb.get("a") is None and cmdb.get("b") is not None
    finally:
        view.stop()
