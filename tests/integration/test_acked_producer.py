"""AckedProducer.send_all on the real broker: one answer for a batch, given only once every record
is settled, in order, and a refusal of any record refuses the batch."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.core.kafka import AckedProducer, DeliveryError
from streams.core.settings import Settings
from tests.kafka_util import conf, consume

pytestmark = pytest.mark.integration


def records_on_broker(bootstrap: str, topic: str) -> int:
    """The sum of the topic's end offsets (what the broker acknowledged)."""
    consumer = Consumer(conf(bootstrap, {"group.id": f"test-{uuid.uuid4().hex}"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        )
    finally:
        consumer.close()


def test_a_batch_resolves_with_every_record_acknowledged_in_order(kafka_settings: Settings) -> None:
    topic = kafka_settings.topic("alerts.raw")
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
    producer = AckedProducer(kafka_settings)
    try:
        acked = asyncio.run(producer.send_all(topic, records, [("source", b"test")]))
        single = asyncio.run(producer.send(topic, b"one", b"last"))
    finally:
        producer.close()
    assert [(m.key(), m.value()) for m in acked] == records
    assert all(m.error() is None and m.offset() >= 0 for m in acked)
    assert single.value() == b"last"
    on_topic = consume(kafka_settings.kafka_bootstrap, topic, 201, timeout=30)
    assert sorted(m.value() for m in on_topic) == sorted([v for _, v in records] + [b"last"])
    assert all(dict(m.headers() or [])["source"] == b"test" for m in on_topic if m.value() != b"last")


def test_a_record_the_client_refuses_fails_the_batch_after_the_others_are_settled(
    kafka_settings: Settings,
) -> None:
    topic = kafka_settings.topic("alerts.raw")
    # librdkafka refuses a record larger than message.max.bytes in produce() itself.
    producer = AckedProducer(kafka_settings, **{"message.max.bytes": 10_000})
    records = [(b"a", b"first"), (b"b", b"x" * 20_000), (b"c", b"never")]
    try:
        with pytest.raises(DeliveryError, match=r"too large|MSG_SIZE_TOO_LARGE"):
            asyncio.run(producer.send_all(topic, records))
        # The record produced before the refusal was acknowledged by the broker when the refusal
        # was reported, never while it was still on its way (a caller retrying it duplicates,
        # never loses): it is below the topic's end offsets already.
        assert records_on_broker(kafka_settings.kafka_bootstrap, topic) == 1
        with pytest.raises(DeliveryError):
            asyncio.run(producer.send_all(topic, [(b"b", b"y" * 20_000)]))
        assert asyncio.run(producer.send_all(topic, [])) == []
    finally:
        producer.close()
    on_topic = consume(kafka_settings.kafka_bootstrap, topic, 2, timeout=15)
    assert [m.value() for m in on_topic] == [b"first"]
