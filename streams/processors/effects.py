"""What every agent does with its results: send them and wait for the broker, or dead-letter the
input with the reason."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Protocol

from streams.core import telemetry
from streams.core.dlq import ErrorClass, Headers
from streams.core.messages import Consumed, Output
from streams.core.topics import dlq_name

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


async def send_all(emit: Emitter, outputs: list[Output], trace: Headers) -> None:
    """Send every output with the input's trace context, then wait until the broker acknowledged
    them all (only then may the input's state move on or its offset commit)."""
    pending = [await emit(topic, key, value, trace) for topic, key, value in outputs]
    for ack in pending:
        await settle(ack)


async def dead_letter(
    emit: Emitter,
    stage: str,
    record: Consumed,
    error_class: ErrorClass,
    message: str,
    now: datetime,
    log: Any,
    dlq: str | None = None,
) -> None:
    """Send the input, as it came, to its topic's .dlq (or dlq) with the reason; wait for the broker."""
    letter = record.dead_letter(stage, error_class, message, first_failed_at=now)
    log.warning(
        "dead_letter",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        error_class=error_class.value,
        reason=message[:300],
    )
    try:
        await settle(
            await emit(
                dlq or dlq_name(record.topic), record.key, record.value or b"", letter.headers(record.headers)
            )
        )
    except Exception:
        # The broker refused the dead letter: counted, then the worker crashes and the record is
        # processed again after the restart (its offset was not committed).
        telemetry.DEAD_LETTER_WRITE_FAILURES.labels(stage).inc()
        raise
    telemetry.DEAD_LETTERS.labels(stage, error_class.value).inc()
