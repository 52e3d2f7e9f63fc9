"""The sink loop: consume commands, deliver through a sink, publish results or dead letters, then commit."""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from connectors.sinks.http import SinkError
from connectors.sinks.known import KnownIds
from streams.core import telemetry
from streams.core.dlq import ErrorClass, Headers
from streams.core.kafka import (
    RefusalGrace,
    client_config,
    note_refusal,
    producer_config,
    renew,
    track,
    with_producer,
)
from streams.core.messages import Consumed, encoded
from streams.core.models import ChangeCommand, IncidentCommand, RecordType, SinkOutcome, SinkResult
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.core.topics import CHANGE_COMMANDS, INCIDENT_COMMANDS, ITSM_RESULTS, dlq_name


class Sink(Protocol):
    """One ITSM target: applies incident and change commands, raising SinkError when it cannot."""

    name: str

    def handle_incident(self, cmd: IncidentCommand) -> SinkResult: ...

    def handle_change(self, cmd: ChangeCommand) -> SinkResult: ...


class Progress:
    """Per partition, the commands handled in offset order and the outputs (result, dead letter)
    each still waits to have acknowledged: the commit point is the first offset not finished, so
    a crash redelivers only what is not done (at least once), with no flush per command."""

    def __init__(self) -> None:
        # partition -> offset -> [outputs not yet acknowledged, handled]; offsets in arrival order
        self.open: dict[int, dict[int, list[Any]]] = {}
        self._lock = threading.Lock()  # lanes begin and finish commands, the main thread commits

    def begin(self, partition: int, offset: int) -> None:
        """A command taken from the partition (again: no change)."""
        with self._lock:
            self.open.setdefault(partition, {}).setdefault(offset, [0, False])

    def expect(self, partition: int, offset: int) -> None:
        with self._lock:
            self.open[partition][offset][0] += 1

    def acknowledged(self, partition: int, offset: int) -> None:
        with self._lock:
            entry = self.open.get(partition, {}).get(offset)
            if entry is not None:
                entry[0] -= 1

    def handled(self, partition: int, offset: int) -> None:
        with self._lock:
            entry = self.open.get(partition, {}).get(offset)
            if entry is not None:
                entry[1] = True

    def committable(self) -> dict[int, int]:
        """partition -> the offset to commit (one past the last finished command in a row)."""
        ready: dict[int, int] = {}
        with self._lock:
            for partition, offsets in self.open.items():
                while offsets:
                    first = next(iter(offsets))
                    outstanding, handled = offsets[first]
                    if not handled or outstanding > 0:
                        break
                    del offsets[first]
                    ready[partition] = first + 1
        return ready

    def forget(self, partitions: set[int]) -> None:
        with self._lock:
            for partition in partitions:
                self.open.pop(partition, None)

    def pending(self) -> int:
        with self._lock:
            return sum(len(o) for o in self.open.values())


NOT_ROUTED = "not_routed"  # itsm_pipeline_sink_commands_total's outcome for a command routed elsewhere
LANE_DEPTH = 32  # commands queued per lane (bounded memory)
# Commands of one partition held while the lane of the first is full, before the partition is
# paused; it is resumed once they are all handed over. Not one pause per command: librdkafka drops
# what it prefetched for a partition when it is paused and fetches it again on resume.
HELD_MAX = 64
COMMIT_EVERY = 0.2  # seconds between asynchronous commits of finished commands


class Lane:
    """One sink instance working through its queue in order: commands of one correlation id
    always go to the same lane, so their order holds while other ids are delivered beside them."""

    def __init__(self, runner: SinkRunner, sink: Sink, index: int) -> None:
        self.runner = runner
        self.sink = sink
        self.queue: queue.Queue[Message | None] = queue.Queue(maxsize=LANE_DEPTH)
        self.thread = threading.Thread(target=self._run, name=f"sink-lane-{index}", daemon=True)

    def _run(self) -> None:
        while True:
            msg = self.queue.get()
            try:
                if msg is None:
                    return
                if self.runner.failure is None:
                    self.runner.process(msg, self.sink)
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread, which raises it
                self.runner.failure = exc
            finally:
                self.queue.task_done()

    def abandon(self) -> None:
        """Drop what is queued (uncommitted, so redelivered): stopping must not wait for it."""
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return
            self.queue.task_done()


KINDS: dict[RecordType, tuple[str, type[IncidentCommand] | type[ChangeCommand]]] = {
    RecordType.INCIDENT: (INCIDENT_COMMANDS, IncidentCommand),
    RecordType.CHANGE: (CHANGE_COMMANDS, ChangeCommand),
}


class SinkRunner:
    """At-least-once delivery: an offset is committed only after its result or dead letter is
    acknowledged; commits are asynchronous and cover every finished command in a row (Progress)."""

    def __init__(
        self,
        settings: Settings,
        serde: AvroSerde,
        sink: Sink,
        kind: RecordType = RecordType.INCIDENT,
        known: KnownIds | None = None,
        more: Sequence[Sink] = (),
    ) -> None:
        """sink, and `more` instances of the same target, each its own lane: commands for
        different correlation ids are delivered concurrently (ITSM_SINK_CONCURRENCY lanes)."""
        self.known = known
        self.settings = settings
        self.serde = serde
        self.sink = sink
        self.kind = kind
        base, self.model = KINDS[kind]
        self.topic = settings.topic(base)
        self.results_topic = settings.topic(ITSM_RESULTS)
        self.dlq_topic = dlq_name(self.topic)
        self.stage = f"sink.{sink.name}" if kind is RecordType.INCIDENT else f"sink.{sink.name}.change"
        self.log = telemetry.get_logger(self.stage)
        self.consumer = track(
            Consumer(
                client_config(
                    settings,
                    **{
                        "group.id": f"{settings.app_id}-sink-{sink.name}"
                        + ("" if kind is RecordType.INCIDENT else "-change"),
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "auto.offset.reset": "earliest",
                        # Longer than the retry budget, so a command in backoff keeps its partition.
                        "max.poll.interval.ms": int((settings.sink_retry_budget_seconds + 60) * 1000),
                    },
                )
            )
        )
        self.producer = track(Producer(producer_config(settings)))
        self._delivery_errors: list[str] = []
        self.processed = 0
        self.target_problem: str | None = None  # the last command's target failure, until one succeeds
        self.progress = Progress()
        self.failure: BaseException | None = None
        self._last_commit = 0.0
        self._count = threading.Lock()
        self.lanes = [Lane(self, s, i) for i, s in enumerate([sink, *more])]
        # Per partition: the commands waiting, in offset order, for room in their lanes.
        self._held: dict[int, deque[Message]] = {}
        self._paused: set[int] = set()
        # Refused while a rotated password is on its way: retried, not fatal (for a while).
        self._grace = RefusalGrace(settings.kafka_refusal_grace_seconds)
        for lane in self.lanes:
            if hasattr(lane.sink, "intent"):
                # A sink whose lookups can lag behind its creates records each create before sending it.
                lane.sink.intent = self._intent

    def _intent(self, cmd: IncidentCommand | ChangeCommand) -> None:
        """Record on itsm.results, acknowledged before the request goes out, that a create of cmd is
        being sent: if its answer is lost and this process dies, the next one to handle the command
        knows a record may exist (KnownIds.pending_since) and looks before creating again."""
        marker = self._result(cmd, SinkOutcome.PENDING, 0, "create sent; outcome not known yet")
        self._publish(*encoded(self.serde, self.results_topic, cmd.correlation_id, marker), [])
        if self.producer.flush(30) or self._delivery_errors:
            raise RuntimeError(f"broker did not acknowledge the create intent: {self._delivery_errors}")
        if self.known is not None:
            self.known.learn(marker)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            note_refusal(err.code(), err.str(), str(msg.topic()))
            self._delivery_errors.append(f"{msg.topic()}: {err.str()}")
            if msg.topic() == self.dlq_topic:
                telemetry.DEAD_LETTER_WRITE_FAILURES.labels(self.stage).inc()

    def _publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        source: tuple[int, int] | None = None,
    ) -> None:
        """Produce one output; with source (partition, offset of the command) its acknowledgement
        counts toward that command being finished."""
        callback = self._on_delivery
        if source is not None:
            partition, offset = source
            self.progress.expect(partition, offset)

            def callback(err: KafkaError | None, msg: Message) -> None:
                self._on_delivery(err, msg)
                if err is None:
                    self.progress.acknowledged(partition, offset)

        while True:
            try:
                self.producer.produce(
                    topic, value=value, key=key, headers=with_producer(headers), on_delivery=callback
                )
                return
            except BufferError:
                # The producer's queue is full: wait for acknowledgements (back-pressure, bounded memory).
                self.producer.poll(0.5)

    def _commit_finished(self, wait: float = 0.0) -> None:
        """Serve acknowledgements, then commit (asynchronously, at most every COMMIT_EVERY
        seconds) up to the first command of each partition that is not finished. A delivery
        failure crashes the sink: what it had not committed is redelivered on restart (at least
        once; the sinks are idempotent)."""
        self.producer.poll(wait)
        if self._delivery_errors:
            raise RuntimeError(f"broker did not acknowledge sink output: {self._delivery_errors}")
        now = time.monotonic()
        if now - self._last_commit < COMMIT_EVERY:
            return
        self._last_commit = now
        ready = self.progress.committable()
        if ready:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in ready.items()], asynchronous=True
            )

    def _drain(self) -> None:
        """Every output acknowledged and every finished command committed (stop, rebalance)."""
        left = self.producer.flush(30)
        if left or self._delivery_errors:
            raise RuntimeError(f"broker did not acknowledge sink output: {self._delivery_errors or left}")
        ready = self.progress.committable()
        if ready:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in ready.items()], asynchronous=False
            )

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A held command was not handed over: not committed, so its next owner delivers it.
        for tp in partitions:
            self._held.pop(tp.partition, None)
            self._paused.discard(tp.partition)
        # The commands in the lanes finish first, then everything finished is committed.
        for lane in self.lanes:
            lane.queue.join()
        self._drain()
        self.progress.forget({tp.partition for tp in partitions})

    def run(
        self,
        stop: threading.Event,
        idle_exit_after: float | None = None,
        check: Callable[[], None] | None = None,
    ) -> int:
        """Consume until stop is set (or, with idle_exit_after, after that many idle seconds)."""
        self.consumer.subscribe([self.topic], on_revoke=self._revoked, on_lost=self._lost)
        self.log.info(
            "sink_started",
            topic=self.topic,
            group=f"{self.settings.app_id}-sink-{self.sink.name}",
            lanes=len(self.lanes),
        )
        for lane in self.lanes:
            lane.thread.start()
        idle = 0.0
        try:
            while not stop.is_set():
                if check is not None:
                    check()  # e.g. the results view is still alive; raises if not
                self._raise_lane_failure()
                self._place_held()
                # While a command waits for room in its lane, poll briefly to place it soon.
                renew(self.consumer)
                msg = self.consumer.poll(0.05 if self._held else 0.2)
                self._commit_finished()
                if msg is None:
                    idle += 0.2 if self.progress.pending() == 0 and not self._held else 0.0
                    if idle_exit_after is not None and idle >= idle_exit_after:
                        break
                    continue
                idle = 0.0
                err = msg.error()
                if err is not None:
                    note_refusal(err.code(), err.str(), str(msg.topic() or ""))
                    failed = err.fatal() or (not err.retriable() and err.code() != KafkaError._PARTITION_EOF)
                    if failed and not self._grace.tolerate(err):
                        raise KafkaException(err)
                    continue
                self._grace.cleared()
                self._dispatch(msg)
            self._stop_lanes()
            self._raise_lane_failure()
            self._drain()
        finally:
            self._stop_lanes()
            self.consumer.close()
            self.producer.flush(10)
        return self.processed

    def _dispatch(self, msg: Message) -> None:
        """Hand msg to the lane of its key (its correlation id). When that lane is full, or
        commands of the partition are already waiting, it waits behind them (offset order, so a
        correlation id's order holds); HELD_MAX waiting pause the partition (back-pressure: memory
        bounded by LANE_DEPTH per lane and HELD_MAX per partition; the consumer keeps polling, so
        rebalances and the other partitions go on) until they are all handed over."""
        partition = int(msg.partition() or 0)
        self.progress.begin(partition, int(msg.offset() or 0))
        held = self._held.get(partition)
        if held is None and self._offer(msg):
            return
        if held is None:
            held = self._held[partition] = deque()
        held.append(msg)
        if len(held) >= HELD_MAX and partition not in self._paused:
            self._paused.add(partition)
            self.consumer.pause([TopicPartition(self.topic, partition)])

    def _offer(self, msg: Message) -> bool:
        lane = self.lanes[zlib.crc32(msg.key() or b"") % len(self.lanes)]
        try:
            lane.queue.put_nowait(msg)
        except queue.Full:
            return False
        return True

    def _place_held(self) -> None:
        for partition, held in list(self._held.items()):
            while held and self._offer(held[0]):
                held.popleft()
            if not held:
                del self._held[partition]
                if partition in self._paused:
                    self._paused.discard(partition)
                    self.consumer.resume([TopicPartition(self.topic, partition)])

    def _raise_lane_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _stop_lanes(self) -> None:
        """Lanes finish their current command; queued ones are dropped (not committed)."""
        for lane in self.lanes:
            if lane.thread.is_alive():
                lane.abandon()
                lane.queue.put(None)
        for lane in self.lanes:
            if lane.thread.is_alive():
                lane.thread.join()

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Partitions taken away without a clean revoke: another member owns them now; what this
        # one did not commit is redelivered there (idempotency absorbs it).
        for tp in partitions:
            self._held.pop(tp.partition, None)
            self._paused.discard(tp.partition)
        self.progress.forget({tp.partition for tp in partitions})

    def process(self, msg: Message, sink: Sink | None = None) -> None:
        """Handle one consumed command end to end (its outputs produced; committed once they are
        acknowledged), through sink (a lane's), by default the first."""
        sink = sink or self.sink
        handler = sink.handle_incident if self.kind is RecordType.INCIDENT else sink.handle_change
        record = Consumed.from_confluent(msg)
        telemetry.RECORDS_IN.labels(self.stage).inc()
        now = datetime.now(UTC)
        source = (record.partition, record.offset)
        if record.offset not in self.progress.open.get(record.partition, {}):
            self.progress.begin(*source)
        with telemetry.tracer(self.stage).start_as_current_span(
            self.stage, context=telemetry.extract_context(record.headers)
        ):
            try:
                cmd = self.serde.decode(record.value or b"", self.model)
            except SerdeError as exc:
                self._dead_letter(record, ErrorClass(exc.error_class), str(exc), 0, now, source)
            else:
                if isinstance(cmd, IncidentCommand) and not cmd.routed_to(self.sink.name):
                    # Routed to other sinks only (routes.toml): counted, committed, not delivered.
                    telemetry.SINK_COMMANDS.labels(self.sink.name, NOT_ROUTED).inc()
                    self.progress.handled(*source)
                    with self._count:
                        self.processed += 1
                    return
                try:
                    result = handler(cmd)  # type: ignore[arg-type]
                    self._observe_latency(record, cmd)
                    self.target_problem = None
                except SINK_FAILURES as exc:
                    error = exc if isinstance(exc, SinkError) else _data_error(exc)
                    if error.error_class in TARGET_FAULTS:
                        # /readyz says so until a command goes through again.
                        self.target_problem = (
                            f"{self.sink.name}: {error.error_class.value}: {str(error)[:200]}"
                        )
                    self._dead_letter(record, error.error_class, str(error), error.attempts, now, source)
                    result = self._result(
                        cmd,
                        SinkOutcome.DEAD_LETTERED,
                        error.attempts,
                        str(error)[:500],
                        error.error_class.value,
                    )
                self._publish(
                    *encoded(self.serde, self.results_topic, cmd.correlation_id, result),
                    telemetry.inject_headers(),
                    source,
                )
                telemetry.SINK_COMMANDS.labels(self.sink.name, result.outcome.value).inc()
                if self.known is not None:
                    self.known.learn(result)
                self.log.info(
                    "command_done",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    correlation_id=cmd.correlation_id,
                    action=cmd.action.value,
                    outcome=result.outcome.value,
                    itsm_number=result.itsm_number,
                    attempts=result.attempts,
                )
            self.progress.handled(*source)
        with self._count:
            self.processed += 1

    def _observe_latency(self, record: Consumed, cmd: IncidentCommand | ChangeCommand) -> None:
        """The ITSM answered: how long since the command was made, and since its alert entered."""
        answered = time.time()
        action = cmd.action.value
        if record.timestamp is not None:
            hop = telemetry.LATENCY.labels("command_to_itsm", self.sink.name, action)
            hop.observe(max(0.0, answered - record.timestamp))
        entered = telemetry.ingested_at(record.headers)
        if entered is not None:
            whole = telemetry.LATENCY.labels("ingest_to_itsm", self.sink.name, action)
            whole.observe(max(0.0, answered - entered))

    def _result(
        self,
        cmd: IncidentCommand | ChangeCommand,
        outcome: SinkOutcome,
        attempts: int,
        message: str,
        error_class: str | None = None,
    ) -> SinkResult:
        """A result of this runner for cmd, stamped now (delivered results are built by the sink)."""
        return SinkResult(
            command_id=cmd.command_id,
            correlation_id=cmd.correlation_id,
            target=self.sink.name,
            record_type=self.kind,
            outcome=outcome,
            attempts=attempts,
            error_class=error_class,
            message=message,
            completed_at=datetime.now(UTC),
        )

    def _dead_letter(
        self,
        record: Consumed,
        error_class: ErrorClass,
        message: str,
        attempts: int,
        first_failed_at: datetime,
        source: tuple[int, int] | None = None,
    ) -> None:
        letter = record.dead_letter(self.stage, error_class, message, attempts, first_failed_at)
        telemetry.DEAD_LETTERS.labels(self.stage, error_class.value).inc()
        self.log.warning(
            "dead_letter",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error_class=error_class.value,
            attempts=attempts,
            reason=message[:300],
        )
        self._publish(self.dlq_topic, record.key, record.value or b"", letter.headers(record.headers), source)


# Errors one command's data can cause in a sink's mapping (a value no field or query can carry):
# the command is dead-lettered as invalid and the sink goes on. Everything else crashes the sink.
DATA_ERRORS: tuple[type[Exception], ...] = (ValueError, UnicodeError, OverflowError)
SINK_FAILURES: tuple[type[Exception], ...] = (SinkError, *DATA_ERRORS)


# Failures that say the target itself is unwell (not the command): the sink is not ready.
TARGET_FAULTS = frozenset({ErrorClass.NETWORK, ErrorClass.AUTH, ErrorClass.RATE_LIMIT})


def _data_error(exc: Exception) -> SinkError:
    return SinkError(f"{type(exc).__name__}: {str(exc)[:300]}", ErrorClass.VALIDATION, 0, False)
