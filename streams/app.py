"""The faust.App factory: one app per worker process, its topics and agents wired from Settings."""

from __future__ import annotations

from typing import Any

import faust

from streams.agents.alerts import AlertProcessor, Emitter, alert_pipeline
from streams.core.dlq import Headers, bytes_headers
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import ALERTS_RAW


def create_app(settings: Settings, serde: AvroSerde, emit: Emitter | None = None) -> faust.App:
    """A Faust app that consumes the declared topics as raw bytes and decodes inside the agents.

    emit replaces sending through Faust's producer (agent tests capture outputs with it).
    """
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        # Topics are declared once and applied by `itsmctl topics apply` before workers start.
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Sends made while handling an event are published and acknowledged before that
        # event's offset is committed: at-least-once without waiting per record.
        stream_publish_on_commit=True,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    out_topics: dict[str, faust.TopicT] = {}

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def send(topic: str, key: bytes | None, value: bytes, headers: Headers) -> Any:
        if topic not in out_topics:
            out_topics[topic] = raw_topic(topic)
        return await out_topics[topic].send(key=key, value=value, headers=bytes_headers(headers))

    processor = AlertProcessor(settings, serde, emit or send, alert_pipeline())
    alerts_raw = raw_topic(settings.topic(ALERTS_RAW))

    @app.agent(alerts_raw, name="alerts")
    async def alerts(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            await processor.handle(msg.key, msg.value, msg.headers, msg.topic, msg.partition, msg.offset)

    return app
