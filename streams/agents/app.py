"""The faust.App factory: one app per worker process, its table, topics, agents and timer."""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import faust
from aiokafka.errors import IllegalStateError
from confluent_kafka import KafkaError
from faust.streams import _current_event
from faust.types import TP

from streams.agents.delivery import DeliveryCursor, Finish, OffsetOracle, TopicPartition
from streams.agents.rulesync import RuleSwitch
from streams.core.dlq import Headers, bytes_headers
from streams.core.kafka import note_refusal, with_producer
from streams.core.messages import Consumed
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
from streams.processors.alerts import AlertProcessor, IncidentIndexWriter, WindowWriter
from streams.processors.changes import ChangeProcessor, ChangeSource, NoChanges
from streams.processors.effects import Emitter
from streams.processors.guards import RecordGuard
from streams.stages.alerts.causes import DeploySource, NoDeploys
from streams.stages.alerts.state import ItsmIncidents, NoItsmIncidents
from streams.stages.cmdb import CMDBIndex

PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}
Timed = Callable[[], Awaitable[None]]  # what a periodic task runs
# RocksDB through rocksdict, with caches sized for a worker rather than Faust's defaults (a 2 GiB
# block cache and 64 MiB write buffers per partition): the state is on disk, memory stays small.
ROCKSDB_OPTIONS = {
    "driver": "rocksdict",
    "block_cache_size": 64 * 1024**2,
    "block_cache_compressed_size": 0,
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024**2,
}


def _credentials(settings: Settings) -> faust.SASLCredentials | None:
    """aiokafka's SASL_SSL settings from the same ITSM_KAFKA_* settings librdkafka's clients use."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    assert settings.kafka_sasl_password is not None
    context = ssl.create_default_context(cafile=settings.kafka_ca_file)  # verifies cert and host
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def rotate_credentials(app: faust.App, username: str, password: str) -> int:
    """A rotated SASL password for the worker's aiokafka clients (its consumer's and producer's,
    and the settings any client made later reads); how many clients took it. aiokafka has no
    public way to change them: the clients' own attributes are set, which each new connection
    reads (the broker's connections.max.reauth.ms ends the old ones). tests/integration/
    test_rotation.py proves it against a broker that takes only the new password."""
    credentials = app.conf.broker_credentials
    if isinstance(credentials, faust.SASLCredentials):
        credentials.username, credentials.password = username, password
    clients = []
    consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
    if consumer is not None:
        clients.append(consumer._client)
    producer = getattr(app.producer, "_producer", None)
    if producer is not None:
        clients.append(producer.client)
    for client in clients:
        client._sasl_plain_username = username
        client._sasl_plain_password = password
    return len(clients)


def _note_refused_send(sent: Any) -> None:
    """A record the broker refused (aiokafka's authorization errors): logged and counted."""
    import aiokafka.errors as errors

    exc = None if sent.cancelled() else sent.exception()
    denied = (
        errors.TopicAuthorizationFailedError,
        errors.ClusterAuthorizationFailedError,
        errors.TransactionalIdAuthorizationFailed,
    )
    if isinstance(exc, denied):
        note_refusal(KafkaError.TOPIC_AUTHORIZATION_FAILED, str(exc))
    elif isinstance(exc, errors.AuthenticationFailedError | errors.SaslAuthenticationFailed):
        note_refusal(KafkaError._AUTHENTICATION, str(exc))


class WorkerApp(faust.App):
    """faust.App whose running producer is handed out without yielding to the event loop.

    Faust's `maybe_start_producer`, behind every `Topic.send` and every table changelog write, is
    wrapped in mode's `stampede`, which awaits `asyncio.sleep(0)` three times per call even once
    the producer runs: every record sent cost three turns of the event loop (a select() each, and
    the aiokafka sender writing a small request each time). The worker's profile showed it as a
    third of each alert's wall time (bench/README.md).
    """

    async def maybe_start_producer(self) -> Any:
        producer = self.producer
        if not self.in_transaction and producer.started:
            return producer
        return await super().maybe_start_producer()


def create_app(
    settings: Settings,
    serde: AvroSerde,
    rules: Rules,
    *,
    cmdb: CMDBIndex,
    incidents: IncidentIndexWriter,
    windows: WindowWriter,
    changes: ChangeSource | None = None,
    itsm: ItsmIncidents | None = None,
    deploys: DeploySource | None = None,
    emit: Emitter | None = None,
    table: MutableMapping[str, bytes] | None = None,
    parked: MutableMapping[str, bytes] | None = None,
    offsets: OffsetOracle | None = None,
    switch: RuleSwitch | None = None,
) -> faust.App:
    """A Faust app that consumes declared topics as raw bytes and decodes inside the agents.

    cmdb, incidents, windows and changes are the global views (processors/indexes.py); emit, table and
    parked replace Faust's producer and tables in agent tests. With offsets (the broker's view of
    the group), every agent's records go through one DeliveryCursor, which delivers them in order
    and commits what was processed (agents/delivery.py says why Faust's own commits are off);
    without it (agent tests) records are handed over as they come.
    """
    app = WorkerApp(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store=f"{settings.worker_store}://",
        datadir=settings.worker_data_dir,
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
        # The alerts agent sends a whole batch before it waits: a few milliseconds of linger let
        # aiokafka put it in a few produce requests instead of one per record.
        producer_linger=settings.worker_producer_linger_seconds,
        producer_max_batch_size=settings.worker_producer_batch_bytes,
        stream_buffer_maxsize=settings.worker_stream_buffer_records,
    )
    out_topics: dict[str, faust.TopicT] = {}

    def raw_topic(*names: str) -> faust.TopicT:
        # acks=False: Faust neither tracks nor commits these topics; the DeliveryCursor does.
        return app.topic(
            *names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            acks=offsets is None,
        )

    # The topics the agents consume (only these go through the cursor; the consumer's assignment
    # also holds the tables' changelog partitions, which Faust reads itself).
    inputs: set[str] = set()

    def input_topic(*names: str) -> faust.TopicT:
        inputs.update(names)
        return raw_topic(*names)

    consume, consume_batches, finish_pending = _delivery(app, settings, offsets, inputs)

    async def send(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        if topic not in out_topics:
            out_topics[topic] = raw_topic(topic)
        # The returned future resolves when the broker acknowledged the record.
        sent = asyncio.ensure_future(
            await out_topics[topic].send(key=key, value=value, headers=bytes_headers(with_producer(headers)))
        )
        sent.add_done_callback(_note_refused_send)
        return sent

    def bytes_table(name: str, like: str, help: str) -> MutableMapping[str, bytes]:
        # Partitioned like the topic whose records write it, so a key's state is where they are.
        return app.Table(
            name,
            default=None,
            key_type=str,
            value_type=bytes,
            partitions=PARTITIONS[like],
            help=help,
            options=ROCKSDB_OPTIONS if settings.worker_store == "rocksdb" else None,
        )

    if table is None:
        table = bytes_table("alert-state", ALERTS_RAW, "AlertState per fingerprint, like alerts.raw")
    scopes: dict[int, Any] = {}

    @contextmanager
    def in_partition(partition: int) -> Iterator[None]:
        event = scopes.get(partition)
        token = _current_event.set(weakref.ref(event)) if event is not None else None
        try:
            yield
        finally:
            if token is not None:
                _current_event.reset(token)

    processor = AlertProcessor(
        settings,
        serde,
        emit or send,
        rules,
        table,
        cmdb,
        incidents,
        windows,
        itsm or NoItsmIncidents(),
        deploys or NoDeploys(),
        in_partition=in_partition,
    )
    raw_name, ticks_name = settings.topic(ALERTS_RAW), settings.topic(ALERTS_TICKS)
    ticks = raw_topic(ticks_name)

    # The rule set each processor runs: a new one (rules.sets, RuleSwitch) is taken between two
    # records or batches, so no record is processed under half of one.
    generations: dict[str, int] = {}

    def current_rules() -> Rules:
        return switch.current()[1] if switch is not None else rules

    def periodic(name: str, period: Callable[[Rules], float]) -> Callable[[Timed], Timed]:
        """Like app.timer, with the period read from the running rule set: a set that changes it
        (`itsmctl rules apply`) takes effect within a second, without a restart (the sleep is
        taken in slices of at most a second). Started with the app's tasks, after recovery; stops
        with the app."""

        def register(fun: Timed) -> Timed:
            async def every_period() -> None:
                clock = asyncio.get_running_loop().time
                last = clock()
                while not app.should_stop:
                    wait = last + period(current_rules()) - clock()
                    if wait > 0:
                        await app.sleep(min(wait, 1.0))
                        continue
                    last = clock()
                    await fun()

            every_period.__qualname__ = name  # Faust names a task's logs and traces by it
            app.task(every_period)
            return fun

        return register

    def take_rules(name: str, target: Any) -> None:
        if switch is None:
            return
        generation, current = switch.current()
        if generations.setdefault(name, 0) != generation:
            target.switch_rules(current)
            generations[name] = generation

    @app.agent(input_topic(raw_name, ticks_name), name="alerts")
    async def alerts(stream: Any) -> None:
        async def batch(events: list[Any]) -> Finish | None:
            take_rules("alerts", processor)
            # Faust writes a table key to the changelog partition (and store) of the current
            # event's partition; a batch's states are written after it (after the next batch was
            # processed), so each write is made in the context of the latest event of its
            # partition.
            run: list[Consumed] = []
            for event in events:
                msg = event.message
                scopes[msg.partition] = event
                if msg.topic != ticks_name:
                    run.append(Consumed.from_faust(msg))
                    continue
                # A tick sees every alert before it, and their states in the table: the batches
                # before and the run so far are finished first.
                await finish_pending()
                if run:
                    await processor.handle_batch(run)
                    run = []
                await processor.tick(msg.partition)
            if run:
                # Finished by the cursor once the next batch was processed (or on a tick, commit
                # or rebalance): the broker's acknowledgements of this one arrive meanwhile.
                return (await processor.start_batch(run)).finish
            return None

        await consume_batches(stream, batch)

    assigned: set[int] = set()

    @periodic("alert-ticks", lambda r: r.lifecycle.tick_interval)
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
        parked = bytes_table(
            "change-parked",
            DEPLOY_EVENTS,
            "Change requests and deployments waiting for their CIs, like deploy.events",
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

    @app.agent(input_topic(updates_name), name="ci-updates")
    async def ci_updates(stream: Any) -> None:
        async def one(msg: Any) -> None:
            take_rules("changes", changer)
            await changer.handle_ci_update(Consumed.from_faust(msg))

        await consume(stream, one)

    @app.agent(input_topic(requests_name, deploys_name, change_ticks_name), name="changes")
    async def change_inputs(stream: Any) -> None:
        async def one(msg: Any) -> None:
            take_rules("changes", changer)
            if msg.topic == change_ticks_name:
                await changer.tick(msg.partition)
            else:
                await changer.handle(Consumed.from_faust(msg))

        await consume(stream, one)

    @periodic("change-ticks", lambda r: r.changes.park_recheck)
    async def tick_parked() -> None:
        # Parked records are retried inside an event of their own partition (table writes).
        for tp in sorted(app.assignor.assigned_actives()):
            if tp.topic == deploys_name:
                await change_ticks.send(key=b"tick", value=b"", partition=tp.partition)

    for base, model in ((CMDB_CI, ConfigurationItem), (MAINTENANCE_WINDOWS, MaintenanceWindow)):
        guard = RecordGuard(settings, serde, emit or send, base, model)

        async def guard_agent(stream: Any, guard: RecordGuard = guard) -> None:
            async def one(msg: Any) -> None:
                await guard.check(Consumed.from_faust(msg))

            await consume(stream, one)

        app.agent(input_topic(settings.topic(base)), name=f"guard-{base}")(guard_agent)

    return app


Consume = Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[None]]
ConsumeBatches = Callable[[Any, Callable[[list[Any]], Awaitable[Finish | None]]], Awaitable[None]]
FinishPending = Callable[[], Awaitable[None]]


def _delivery(
    app: faust.App, settings: Settings, offsets: OffsetOracle | None, inputs: set[str]
) -> tuple[Consume, ConsumeBatches, FinishPending]:
    """How the agents consume their streams, record by record or in batches: through a
    DeliveryCursor that commits what was processed (with offsets), or as Faust delivers them
    (agent tests)."""
    size, wait = settings.worker_batch_size, settings.worker_batch_wait_seconds
    if offsets is None:

        async def as_delivered(stream: Any, handle: Callable[[Any], Awaitable[Any]]) -> None:
            async for event in stream.events():
                await handle(event.message)

        async def batches_as_delivered(
            stream: Any, handle: Callable[[list[Any]], Awaitable[Finish | None]]
        ) -> None:
            async for events in stream.take_events(size, wait):
                finish = await handle(list(events))
                if finish is not None:
                    await finish()

        async def nothing_pending() -> None:
            return None

        return as_delivered, batches_as_delivered, nothing_pending

    async def seek(tp: TopicPartition, offset: int) -> None:
        # Faust's Consumer.seek calls aiokafka's seek from this thread while the consumer's own
        # thread may be draining fetched records: the seek deleted the partition's records under
        # it (a KeyError in aiokafka's fetched_records that stopped the worker). The seek runs in
        # the consumer's thread instead, as Faust's own seek_wait does.
        consumer: Any = app.consumer
        target = TP(tp.topic, tp.partition)
        thread = getattr(consumer, "_thread", None)
        try:
            if thread is None:
                await consumer.seek(target, offset)
                return

            async def in_consumer_thread() -> None:
                thread._ensure_consumer().seek(target, offset)

            await thread.call_thread(in_consumer_thread)
            consumer._read_offset[target] = offset if offset else None  # what Consumer.seek sets
        except IllegalStateError:
            pass  # no longer assigned: its next owner starts from the committed offset

    def owned() -> list[Any]:
        return [tp for tp in app.consumer.assignment() if tp.topic in inputs]

    cursor = DeliveryCursor(offsets, seek, owned)
    app.delivery_cursor = cursor  # type: ignore[attr-defined]

    async def commit(only: set[Any] | None = None) -> None:
        await cursor.finish_pending()  # a batch handled last is finished now, not at the next
        epoch = cursor.epoch
        due = cursor.to_commit(only)
        if not due:
            return
        # The state changelog and every output of the records below the positions must be on the
        # broker before the positions are: a crash after the commit must not lose a table write.
        await app.producer.flush()
        # Faust's own commit path filters by assignment and handles a rebalanced group.
        consumer: Any = app.consumer
        if await consumer._commit({TP(tp.topic, tp.partition): pos for tp, pos in due.items()}):
            cursor.mark_committed(due, epoch)

    def highwater(tp: TopicPartition) -> int | None:
        try:
            end = app.consumer.highwater(TP(tp.topic, tp.partition))
        except (AssertionError, IllegalStateError):
            return None  # revoked meanwhile (aiokafka asserts the partition is assigned)
        return int(end) if end is not None else None

    @app.timer(settings.worker_commit_interval_seconds, name="delivery-commit")
    async def commit_positions() -> None:
        await commit()
        await cursor.unstick(highwater)

    async def on_revoked(_app: Any, revoked: set[Any], **_kw: Any) -> None:
        # Still a member of the old generation: commit what this member processed, so the next
        # owner does not process it again, then forget every position.
        await commit(revoked)
        cursor.reset()

    async def on_assigned(_app: Any, assigned: set[Any], **_kw: Any) -> None:
        cursor.reset()

    signals: Any = (app.on_partitions_revoked, app.on_partitions_assigned)
    signals[0].connect(on_revoked)
    signals[1].connect(on_assigned)

    async def in_batches(stream: Any, handle: Callable[[list[Any]], Awaitable[Finish | None]]) -> None:
        await cursor.consume_batches(stream, handle, size, wait)

    return cursor.consume, in_batches, cursor.finish_pending
