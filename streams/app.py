"""The faust.App factory: one app per worker process, its table, topics, agents and timer."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import faust

from streams.agents.alerts import AlertProcessor, IncidentIndexWriter
from streams.agents.changes import ChangeProcessor, ChangeSource, NoChanges
from streams.agents.effects import Emitter
from streams.agents.guards import RecordGuard
from streams.core.dlq import Headers, bytes_headers
from streams.core.models import ConfigurationItem, MaintenanceWindow
from streams.core.rules import Rules
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.topics import (
    ALERTS_RAW,
    ALERTS_TICKS,
    CHANGE_REQUESTS,
    CHANGES_TICKS,
    CMDB_CI,
    CMDB_CI_UPDATES,
    DEPLOY_EVENTS,
    MAINTENANCE_WINDOWS,
    TOPICS,
)
from streams.stages.cmdb import CMDBIndex
from streams.stages.state import WindowSource

PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}


def create_app(
    settings: Settings,
    serde: AvroSerde,
    rules: Rules,
    *,
    cmdb: CMDBIndex,
    incidents: IncidentIndexWriter,
    windows: WindowSource,
    changes: ChangeSource | None = None,
    emit: Emitter | None = None,
    table: MutableMapping[str, bytes] | None = None,
    parked: MutableMapping[str, bytes] | None = None,
) -> faust.App:
    """A Faust app that consumes declared topics as raw bytes and decodes inside the agents.

    cmdb, incidents, windows and changes are the global views (agents/views.py); emit, table and
    parked replace Faust's producer and tables in agent tests.
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
        broker_commit_interval=settings.worker_commit_interval_seconds,
        broker_session_timeout=settings.worker_session_timeout_seconds,
        broker_heartbeat_interval=settings.worker_heartbeat_interval_seconds,
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

    if parked is None:
        parked = app.Table(
            "change-parked",
            default=None,
            key_type=str,
            value_type=bytes,
            partitions=PARTITIONS[DEPLOY_EVENTS],
            help="Change requests and deployments waiting for their CIs, like deploy.events",
        )
    changer = ChangeProcessor(
        settings,
        serde,
        emit or send,
        rules,
        parked,
        cmdb,
        changes or NoChanges(),
        settings.gate_environment_set(),
    )
    updates_name = settings.topic(CMDB_CI_UPDATES)
    requests_name, deploys_name = settings.topic(CHANGE_REQUESTS), settings.topic(DEPLOY_EVENTS)
    change_ticks_name = settings.topic(CHANGES_TICKS)
    change_ticks = raw_topic(change_ticks_name)

    @app.agent(raw_topic(updates_name), name="ci-updates")
    async def ci_updates(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            await changer.handle_ci_update(msg.key, msg.value, msg.headers, msg.partition, msg.offset)

    @app.agent(raw_topic(requests_name, deploys_name, change_ticks_name), name="changes")
    async def change_inputs(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            if msg.topic == change_ticks_name:
                await changer.tick(msg.partition)
            else:
                await changer.handle(msg.key, msg.value, msg.headers, msg.topic, msg.partition, msg.offset)

    @app.timer(rules.changes.park_recheck, name="change-ticks")
    async def tick_parked() -> None:
        # Parked records are retried inside an event of their own partition (table writes).
        for tp in sorted(app.assignor.assigned_actives()):
            if tp.topic == deploys_name:
                await change_ticks.send(key=b"tick", value=b"", partition=tp.partition)

    for base, model in ((CMDB_CI, ConfigurationItem), (MAINTENANCE_WINDOWS, MaintenanceWindow)):
        guard = RecordGuard(settings, serde, emit or send, base, model)
        app.agent(raw_topic(settings.topic(base)), name=f"guard-{base}")(guard.agent)

    return app
