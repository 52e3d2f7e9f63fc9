"""Kafka records as the pipeline handles them: a consumed record with its coordinates, and an
encoded output ready to send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from streams.core import telemetry
from streams.core.dlq import DeadLetter, ErrorClass, Headers

if TYPE_CHECKING:
    from datetime import datetime

    from streams.core.models import Record
    from streams.core.serde import AvroSerde


def header_list(headers: Any) -> Headers:
    """Headers as a list of pairs (librdkafka may give None, Faust a list or a mapping)."""
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


@dataclass(frozen=True, slots=True)
class Consumed:
    """One consumed record: what processors, guards and sinks handle, and what a dead letter keeps."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None  # the record's time (epoch seconds), when the consumer gave one

    @classmethod
    def from_faust(cls, msg: Any) -> Consumed:
        """From a Faust message (attributes)."""
        return cls(
            msg.key,
            msg.value,
            header_list(msg.headers),
            msg.topic,
            msg.partition,
            msg.offset,
            msg.timestamp if isinstance(msg.timestamp, int | float) else None,
        )

    @classmethod
    def from_confluent(cls, msg: Any) -> Consumed:
        """From a confluent-kafka Message (methods)."""
        return cls(
            msg.key(),
            msg.value(),
            header_list(msg.headers()),
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            _confluent_time(msg),
        )

    def trace(self) -> Headers:
        """The headers to carry onto every output: the W3C trace context and the time the record's
        alert entered the pipeline (this record's own time when it is the first hop)."""
        out = [(k, v) for k, v in self.headers if k in telemetry.CARRIED_HEADERS]
        if self.timestamp is not None and not any(k == telemetry.INGESTED_AT for k, _ in out):
            out.append((telemetry.INGESTED_AT, str(int(self.timestamp * 1000)).encode()))
        return out

    def ingested_at(self) -> float | None:
        """When this record's alert entered the pipeline (epoch seconds), if known."""
        return telemetry.ingested_at(self.headers) or self.timestamp

    def dead_letter(
        self,
        stage: str,
        error_class: ErrorClass,
        message: str,
        attempts: int = 1,
        first_failed_at: datetime | None = None,
    ) -> DeadLetter:
        """Why this record could not be processed, naming where it came from."""
        return DeadLetter(
            self.topic, self.partition, self.offset, stage, error_class, message, attempts, first_failed_at
        )


def _confluent_time(msg: Any) -> float | None:
    kind, stamp = msg.timestamp()
    return stamp / 1000.0 if kind and stamp > 0 else None


class Output(NamedTuple):
    """One record to send: topic, key and the encoded value (None: a tombstone)."""

    topic: str
    key: bytes | None
    value: bytes | None


def encoded(serde: AvroSerde, topic: str, key: str, record: Record) -> Output:
    """record encoded for topic (framing chosen by serde), keyed by key."""
    return Output(topic, key.encode(), serde.encode(record, topic))
