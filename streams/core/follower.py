"""A global view of a topic: every process reads every partition into memory and follows it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streams.core import telemetry
from streams.core.kafka import REFUSALS, RefusalGrace, client_config, note_refusal, renew, track
from streams.core.settings import Settings

# Metadata errors that clear by themselves shortly after a topic is created or a leader moves.
TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


class TopicFollower:
    """Follows all partitions of one topic from the beginning, without a consumer group.

    `ready` is set once the view has read up to the end offsets it saw at start, so a worker
    can wait until the CMDB or the window calendar is complete before it processes alerts.
    """

    def __init__(self, settings: Settings, topic: str, apply: Callable[[bytes, bytes | None], None]) -> None:
        self.topic = topic
        self.apply = apply
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._consumer = track(
            Consumer(
                client_config(
                    settings,
                    **{
                        "group.id": f"{settings.app_id}-view-{uuid.uuid4().hex[:8]}",
                        "enable.auto.commit": False,
                        "auto.offset.reset": "earliest",
                        "enable.partition.eof": True,
                    },
                )
            )
        )
        self._thread = threading.Thread(target=self._run, name=f"view-{topic}", daemon=True)
        self.log = telemetry.get_logger("view", topic=topic)
        self.failure: BaseException | None = None
        # Refused while a rotated password is on its way: retried, not failed (for a while).
        self._grace = RefusalGrace(settings.kafka_refusal_grace_seconds)

    def start(self) -> TopicFollower:
        self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError(f"view of {self.topic} did not catch up within {timeout}s")
        if self.failure is not None:
            raise RuntimeError(f"view of {self.topic} failed: {self.failure}")

    def check(self) -> None:
        """Raise if the view stopped following its topic (infrastructure failure: crash loudly)."""
        if self.failure is not None:
            raise RuntimeError(f"view of {self.topic} failed: {self.failure}")

    def problem(self) -> str | None:
        """For readiness probes: None when caught up and alive, else what is wrong."""
        if self.failure is not None:
            return f"view of {self.topic} failed: {self.failure}"
        if not self.ready.is_set():
            return f"view of {self.topic} not caught up"
        return None

    def stop(self) -> None:
        self.signal_stop()
        self._thread.join(5)

    def signal_stop(self) -> None:
        """Ask the thread to finish without waiting for it (several followers stop together)."""
        self._stop.set()

    def _start_offsets(self, deadline: float) -> tuple[list[TopicPartition], set[int]]:
        """Partitions to read and which hold data. Transient metadata errors (no leader yet
        right after the topic was created, say) and a refused password (rotated while the process
        starts: the new one is taken before each try) are retried until the deadline."""
        while True:
            renew(self._consumer)  # a password rotated while the process starts
            try:
                meta = self._consumer.list_topics(self.topic, timeout=10)
                if meta.topics[self.topic].error is not None:
                    raise KafkaException(meta.topics[self.topic].error)
                parts = [
                    TopicPartition(self.topic, p, OFFSET_BEGINNING)
                    for p in meta.topics[self.topic].partitions
                ]
                pending = set()
                for tp in parts:
                    low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
                    if high > low:
                        pending.add(tp.partition)
                return parts, pending
            except KafkaException as exc:
                err = exc.args[0]
                transient = isinstance(err, KafkaError) and (
                    err.retriable() or err.code() in TRANSIENT or self._grace.tolerate(err)
                )
                if not transient or time.monotonic() > deadline:
                    raise
                self.log.info("view_waiting", reason=err.str())
                time.sleep(0.5)

    def _caught_up(self) -> None:
        self.ready.set()
        telemetry.VIEW_UP.labels(self.topic).set(1)

    def _run(self) -> None:
        up = telemetry.VIEW_UP.labels(self.topic)
        up.set(0)
        try:
            parts, pending = self._start_offsets(time.monotonic() + 60)
            self._consumer.assign(parts)
            if not pending:
                self._caught_up()
            while not self._stop.is_set():
                renew(self._consumer)
                msg = self._consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        if not pending and not self.ready.is_set():
                            self._caught_up()
                        continue
                    if err.fatal() or err.code() in REFUSALS:
                        if self._grace.tolerate(err):
                            note_refusal(err.code(), err.str(), self.topic)
                            continue
                        raise KafkaException(err)  # a refused view never catches up: fail it
                    continue
                self._grace.cleared()
                key = msg.key()
                if key is not None:
                    self.apply(key, msg.value())
        except Exception as exc:  # noqa: BLE001 - recorded and re-raised to the waiting worker
            if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
                note_refusal(exc.args[0].code(), exc.args[0].str(), self.topic)
            self.failure = exc
            up.set(0)
            self.log.error("view_failed", error=str(exc))
            self.ready.set()
        finally:
            self._consumer.close()
