"""What every agent does with its results: send them and wait for the broker, or dead-letter the
input with the reason."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Protocol

from streams.core import telemetry
from streams.core.dlq import DeadLetter, ErrorClass, Headers
from streams.core.topics import dlq_name

Output = tuple[str, bytes | None, bytes | None]

# Exceptions a record's own data can raise in a stage or an encoder once it decoded (a value out
# of a field's range, a date past the calendar's end): the record is dead-lettered as invalid and
# the stream goes on. Anything else is the infrastructure's and crashes the worker.
DATA_FAULTS: tuple[type[Exception], ...] = (ValueError, OverflowError, UnicodeError)


class Emitter(Protocol):
    """Sends one record; the returned awaitable completes once the record is accepted for delivery."""

    def __call__(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> Awaitable[Any]: ...


async def settle(ack: Any) -> None:
    """Wait for a send's broker acknowledgement, when the emitter returned one."""
    if ack is not None and hasattr(ack, "__await__"):
        await ack


async def send_all(emit: Emitter, outputs: list[Output], headers: Headers) -> None:
    """Send every output with the input's trace context, then wait until the broker acknowledged
    them all (only then may the input's state move on or its offset commit)."""
    trace = [(k, v) for k, v in headers if k in telemetry.TRACE_HEADERS]
    pending = [await emit(topic, key, value, trace) for topic, key, value in outputs]
    for ack in pending:
        await settle(ack)


async def dead_letter(
    emit: Emitter,
    stage: str,
    source: tuple[str, int, int],
    record: tuple[bytes | None, bytes | None, Headers],
    error_class: ErrorClass,
    message: str,
    now: datetime,
    log: Any,
    dlq: str | None = None,
) -> None:
    """Send the input, as it came, to its topic's .dlq (or dlq) with the reason; wait for the broker."""
    topic, partition, offset = source
    key, value, headers = record
    letter = DeadLetter(topic, partition, offset, stage, error_class, message, first_failed_at=now)
    log.warning(
        "dead_letter",
        topic=topic,
        partition=partition,
        offset=offset,
        error_class=error_class.value,
        reason=message[:300],
    )
    try:
        await settle(await emit(dlq or dlq_name(topic), key, value or b"", letter.headers(headers)))
    except Exception:
        # The broker refused the dead letter: counted, then the worker crashes and the record is
        # processed again after the restart (its offset was not committed).
        telemetry.DEAD_LETTER_WRITE_FAILURES.labels(stage).inc()
        raise
    telemetry.DEAD_LETTERS.labels(stage, error_class.value).inc()
