"""Dead-letter operations: list DLQ topics, show and count their records, replay them to their source."""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ops.runtime import CommandError
from streams.core.dlq import DLQ_HEADER_PREFIX, ErrorClass, Headers, header_map
from streams.core.kafka import producer_config, reader, with_producer
from streams.core.models import AuditEvent, AuditOutcome
from streams.core.serde import AvroSerde
from streams.core.settings import Settings
from streams.core.timeutil import parse_rfc3339
from streams.core.topics import AUDIT_EVENTS, DLQ_REPLAYS, DLQ_SUFFIX, declared

REPLAYED_FROM = "dlq.replayed_from"


@dataclass(frozen=True)
class DeadRecord:
    """One dead letter with its coordinates and what its headers say."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    info: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def failed_at(self) -> datetime | None:
        text = self.info.get("dlq.first_failed_at")
        try:
            return parse_rfc3339(text, "dlq.first_failed_at") if text else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Filter:
    """Which dead letters to act on."""

    error_classes: frozenset[str] = frozenset()
    key: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, rec: DeadRecord) -> bool:
        if self.error_classes and rec.info.get("dlq.error.class") not in self.error_classes:
            return False
        if self.key is not None and (rec.key or b"").decode("utf-8", "replace") != self.key:
            return False
        at = rec.failed_at
        if self.since and (at is None or at < self.since):
            return False
        return not (self.until and (at is None or at >= self.until))


def dlq_topics(settings: Settings) -> list[str]:
    return [s.name for s in declared(settings.topic_prefix) if s.name.endswith(DLQ_SUFFIX)]


def _consumer(settings: Settings) -> Consumer:
    return reader(settings, "dlq", **{"enable.partition.eof": True})


# Answers while a partition's leader is being elected or its metadata is not known yet.
ELECTING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def _watermarks(consumer: Consumer, tp: TopicPartition, patience: float = 15.0) -> tuple[int, int]:
    """A partition's low and high offsets, asked again while the broker says it is electing a
    leader (a topic created a moment ago, a broker restarting)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=15)
            return int(low), int(high)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
            if code not in ELECTING or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def read_all(settings: Settings, topic: str, since: datetime | None = None) -> Iterator[Message]:
    """Every record of topic up to its end as of now (since: only those written at or after it),
    partition by partition in offset order."""
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=15)
        if meta.topics[topic].error is not None:
            raise CommandError(f"topic {topic} is not available: {meta.topics[topic].error.str()}")
        partitions = list(meta.topics[topic].partitions)
        starts = {p: OFFSET_BEGINNING for p in partitions}
        if since is not None:
            stamp = int(since.timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, stamp) for p in partitions], timeout=15
            )
            starts = {tp.partition: tp.offset for tp in found}
        yield from _to_the_end(consumer, {(topic, p): starts.get(p, -1) for p in partitions})
    finally:
        consumer.close()


def topic_names(settings: Settings) -> set[str]:
    """The topics the broker shows this principal (one it may not describe is not among them)."""
    consumer = _consumer(settings)
    try:
        return set(consumer.list_topics(timeout=15).topics)
    finally:
        consumer.close()


def read_topics(settings: Settings, topics: list[str]) -> Iterator[Message]:
    """Every retained record of topics, up to their ends as of now, in offset order within each
    partition (the partitions read together); CommandError when one is not available."""
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(timeout=15)
        starts: dict[tuple[str, int], int] = {}
        for name in topics:
            topic = meta.topics.get(name)
            if topic is None or topic.error is not None:
                why = topic.error.str() if topic is not None and topic.error is not None else "not found"
                raise CommandError(f"topic {name} is not available: {why}")
            starts.update({(name, p): OFFSET_BEGINNING for p in topic.partitions})
        yield from _to_the_end(consumer, starts)
    finally:
        consumer.close()


def _to_the_end(consumer: Consumer, starts: dict[tuple[str, int], int]) -> Iterator[Message]:
    """The records of each (topic, partition) from its start offset (OFFSET_BEGINNING, or one
    offsets_for_times found; -1 for none) up to its high watermark as of now."""
    ends: dict[tuple[str, int], int] = {}
    for (topic, p), start in starts.items():
        low, high = _watermarks(consumer, TopicPartition(topic, p))
        if high > low and (start == OFFSET_BEGINNING or 0 <= start < high):
            ends[(topic, p)] = high
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, starts[(topic, p)]) for topic, p in ends])
    while ends:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        err = msg.error()
        at, offset = (str(msg.topic()), msg.partition() or 0), msg.offset() or 0
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                ends.pop(at, None)
            continue
        if offset >= ends.get(at, -1):
            ends.pop(at, None)
            continue
        yield msg
        if offset + 1 >= ends.get(at, 0):
            ends.pop(at, None)


def dead_records(settings: Settings, topic: str) -> Iterator[DeadRecord]:
    for msg in read_all(settings, topic):
        raw = msg.headers() or []
        pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
        headers = [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]
        yield DeadRecord(
            msg.topic() or topic,
            msg.partition() or 0,
            msg.offset() or 0,
            msg.key(),
            msg.value(),
            headers,
            header_map(headers),
        )


def count(settings: Settings, topic: str) -> int:
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=15)
        total = 0
        for p in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            total += high - low
        return total
    finally:
        consumer.close()


BUCKETS = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d"}  # time bucket -> its label's format


def stats(records: list[DeadRecord], bucket: str = "hour") -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Counts by error class, by stage, and by time bucket (hour or day) of the first failure."""
    fmt = BUCKETS[bucket]
    by_class = Counter(r.info.get("dlq.error.class", "unknown") for r in records)
    by_stage = Counter(r.info.get("dlq.stage", "?") for r in records)
    by_time = Counter((r.failed_at.strftime(fmt) if r.failed_at else "unknown") for r in records)
    return by_class, by_stage, by_time


def replayed_refs(settings: Settings) -> set[str]:
    """Dead letters already replayed, from the ledger topic (tombstones un-mark)."""
    done: set[str] = set()
    for msg in read_all(settings, settings.topic(DLQ_REPLAYS)):
        ref = (msg.key() or b"").decode()
        if msg.value() is None:
            done.discard(ref)
        else:
            done.add(ref)
    return done


@dataclass
class ReplayReport:
    selected: int = 0
    skipped_already: int = 0
    replayed: int = 0


def replay(
    settings: Settings,
    topic: str,
    flt: Filter,
    *,
    dry_run: bool,
    rate: float,
    actor: str,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Send the selected dead letters back to the topic they failed on, in DLQ order, once each."""
    done = replayed_refs(settings)
    chosen = [r for r in dead_records(settings, topic) if flt(r)]
    report = ReplayReport(selected=len(chosen))
    todo = [r for r in chosen if r.ref not in done]
    report.skipped_already = len(chosen) - len(todo)
    if dry_run:
        return report
    if not todo:
        # An operator's replay is audited even when the ledger says there is nothing left to send.
        _audit(settings, actor, topic, report, flt, uuid.uuid4().hex)
        return report
    # One producer, ordered: records of one key keep their DLQ order (max in flight with idempotence).
    producer = Producer(producer_config(settings))
    errors: list[str] = []
    ledger = settings.topic(DLQ_REPLAYS)
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    replay_id = uuid.uuid4().hex
    for i, rec in enumerate(todo, 1):
        source = rec.info.get("dlq.topic")
        if not source:
            errors.append(f"{rec.ref}: no dlq.topic header, cannot tell where it came from")
            continue
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at, time.monotonic()) + interval
        headers: Headers = [(k, v) for k, v in rec.headers if not k.startswith(DLQ_HEADER_PREFIX)]
        headers.append((REPLAYED_FROM, rec.ref.encode()))

        def delivered(err: KafkaError | None, _msg: Message, ref: str = rec.ref) -> None:
            if err is not None:
                errors.append(f"{ref}: {err.str()}")
                return
            # Only an acknowledged replay goes into the ledger.
            producer.produce(ledger, key=ref.encode(), value=replay_id.encode())

        producer.produce(
            source, key=rec.key, value=rec.value, headers=with_producer(headers), on_delivery=delivered
        )
        producer.poll(0)
        report.replayed += 1
        if progress:
            progress(i, len(todo))
    left = producer.flush(60)
    producer.flush(30)  # the ledger records queued by the last callbacks
    if left or errors:
        raise CommandError(f"{len(errors) or left} record(s) not acknowledged: {errors[:5]}")
    _audit(settings, actor, topic, report, flt, replay_id)
    return report


def _audit(
    settings: Settings, actor: str, topic: str, report: ReplayReport, flt: Filter, replay_id: str
) -> None:
    serde = AvroSerde()
    audit_topic = settings.topic(AUDIT_EVENTS)
    event = AuditEvent(
        event_id=f"dlq-replay-{replay_id}",
        occurred_at=datetime.now(UTC),
        actor=actor,
        action="dlq.replay",
        subject_type="dlq",
        subject_id=topic,
        outcome=AuditOutcome.DONE,
        reason=f"replayed {report.replayed} of {report.selected} selected dead letter(s)",
        details={
            "error_classes": ",".join(sorted(flt.error_classes)),
            "key": flt.key or "",
            "since": flt.since.isoformat() if flt.since else "",
            "until": flt.until.isoformat() if flt.until else "",
            "skipped_already_replayed": str(report.skipped_already),
        },
    )
    producer = Producer(producer_config(settings))
    producer.produce(audit_topic, key=topic.encode(), value=serde.encode(event, audit_topic))
    if producer.flush(30):
        raise CommandError("the audit event was not acknowledged")


def progress_printer(stream: TextIO | None = None) -> Callable[[int, int], None]:
    """A progress bar on a terminal, a line every 10 % otherwise."""
    out = stream or sys.stderr
    tty = out.isatty()
    last = [-1]

    def show(done: int, total: int) -> None:
        pct = done * 100 // total
        if tty:
            bar = "#" * (pct // 4)
            print(
                f"\rreplaying [{bar:<25}] {done}/{total} ({pct}%)",
                end="" if done < total else "\n",
                file=out,
                flush=True,
            )
        elif pct // 10 != last[0] // 10 or done == total:
            print(f"replayed {done}/{total} ({pct}%)", file=out, flush=True)
        last[0] = pct

    return show


ERROR_CLASSES = [c.value for c in ErrorClass]
