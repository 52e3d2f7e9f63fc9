"""The faust.App factory: one app per worker process, its table, topics, agents and timer."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import faust

from streams.agents.alerts import AlertProcessor, Emitter, IncidentIndexWriter
from streams.agents.guards import RecordGuard
from streams.core.dlq import Headers, bytes_headers
from streams.core.models import ConfigurationItem, MaintenanceWindow
from streams.core.rules import Rules
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import ALERTS_RAW, ALERTS_TICKS, CMDB_CI, MAINTENANCE_WINDOWS, TOPICS
from streams.stages.state import CIIndex, WindowSource

PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}


def create_app(
    settings: Settings,
    serde: AvroSerde,
    rules: Rules,
    *,
    cmdb: CIIndex,
    incidents: IncidentIndexWriter,
    windows: WindowSource,
    emit: Emitter | None = None,
    table: MutableMapping[str, bytes] | None = None,
) -> faust.App:
    """A Faust app that consumes declared topics as raw bytes and decodes inside the agents.

    cmdb, incidents and windows are the global views (agents/views.py); emit and table replace
    Faust's producer and table in agent tests.
    """
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        # Our topics are applied by `itsmctl topics apply`; Faust declares only its own
        # internal ones (the table's changelog).
        topic_disable_leader=True,
        topic_replication_factor=settings.topic_replication,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    out_topics: dict[str, faust.TopicT] = {}

    def raw_topic(*names: str) -> faust.TopicT:
        return app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    async def send(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        if topic not in out_topics:
            out_topics[topic] = raw_topic(topic)
        # The returned future resolves when the broker acknowledged the record.
        return await out_topics[topic].send(key=key, value=value, headers=bytes_headers(headers))

    if table is None:
        table = app.Table(
            "alert-state",
            default=None,
            key_type=str,
            value_type=bytes,
            partitions=PARTITIONS[ALERTS_RAW],
            help="AlertState per fingerprint, like alerts.raw",
        )
    processor = AlertProcessor(settings, serde, emit or send, rules, table, cmdb, incidents, windows)
    raw_name, ticks_name = settings.topic(ALERTS_RAW), settings.topic(ALERTS_TICKS)
    ticks = raw_topic(ticks_name)

    @app.agent(raw_topic(raw_name, ticks_name), name="alerts")
    async def alerts(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            if msg.topic == ticks_name:
                await processor.tick(msg.partition)
            else:
                await processor.handle(msg.key, msg.value, msg.headers, msg.topic, msg.partition, msg.offset)

    assigned: set[int] = set()

    @app.timer(rules.lifecycle.tick_interval, name="alert-ticks")
    async def tick_owned_partitions() -> None:
        # A tick goes through the stream, so time-driven state changes happen inside an event
        # of the partition that owns the state (Faust writes tables only from events).
        now = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == raw_name}
        if now != assigned:
            processor.forget_partitions()
            assigned.clear()
            assigned.update(now)
        for partition in sorted(now):
            await ticks.send(key=b"tick", value=b"", partition=partition)

    for base, model in ((CMDB_CI, ConfigurationItem), (MAINTENANCE_WINDOWS, MaintenanceWindow)):
        guard = RecordGuard(settings, serde, emit or send, base, model)
        app.agent(raw_topic(settings.topic(base)), name=f"guard-{base}")(guard.agent)

    return app
