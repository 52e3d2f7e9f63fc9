"""The dead-letter envelope: the original key, value and headers plus dlq.* headers saying why."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

Headers = list[tuple[str, str | bytes | None]]
"""Kafka record headers as confluent-kafka and Faust take them."""


class ErrorClass(StrEnum):
    """Closed set of failure classes (bounded metric labels)."""

    NETWORK = "network"
    AUTH = "auth"
    SCHEMA = "schema"
    VALIDATION = "validation"
    RATE_LIMIT = "rate_limit"
    CONFLICT = "conflict"
    ENCRYPTION = "encryption"  # a sensitive field whose key is missing, or that does not decrypt
    UNKNOWN = "unknown"


DLQ_HEADER_PREFIX = "dlq."
MAX_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class DeadLetter:
    """Why one input record could not be processed, and where it came from."""

    topic: str
    partition: int
    offset: int
    stage: str
    error_class: ErrorClass
    message: str
    attempts: int = 1
    first_failed_at: datetime | None = None

    def headers(self, original: Iterable[tuple[str, bytes | str | None]] | None = None) -> Headers:
        """The original headers (minus any earlier dlq.*) followed by this failure's dlq.* headers."""
        kept: Headers = []
        for key, value in original or ():
            if key.startswith(DLQ_HEADER_PREFIX):
                continue
            if value is None:
                kept.append((key, b""))
            else:
                kept.append((key, value.encode() if isinstance(value, str) else bytes(value)))
        failed_at = (self.first_failed_at or datetime.now(UTC)).astimezone(UTC)
        msg = (
            self.message
            if len(self.message) <= MAX_MESSAGE_CHARS
            else self.message[:MAX_MESSAGE_CHARS] + "..."
        )
        return [
            *kept,
            ("dlq.topic", self.topic.encode()),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
            ("dlq.stage", self.stage.encode()),
            ("dlq.error.class", self.error_class.value.encode()),
            ("dlq.exception.message", msg.encode()),
            ("dlq.attempts", str(self.attempts).encode()),
            ("dlq.first_failed_at", failed_at.isoformat(timespec="milliseconds").encode()),
        ]


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a str->str dict (last wins), for reading dlq.* back."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[key] = (value or b"").decode("utf-8", errors="replace")
    return out


def bytes_headers(headers: Headers | None) -> list[tuple[str, bytes]]:
    """Headers with every value as bytes (None becomes empty), for clients that want only bytes."""
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in headers or ()]
