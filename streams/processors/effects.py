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


async def send_outputs(emit: Emitter, outputs: list[Output], trace: Headers) -> list[Any]:
    """Send every output with the input's trace context; the acknowledgements, not yet awaited."""
    return [await emit(topic, key, value, trace) for topic, key, value in outputs]


async def send_all(emit: Emitter, outputs: list[Output], trace: Headers) -> None:
    """Send every output with the input's trace context, then wait until the broker acknowledged
    them all (only then may the input's state move on or its offset commit)."""
    for ack in await send_outputs(emit, outputs, trace):
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
    ack = await send_dead_letter(emit, stage, record, error_class, message, now, log, dlq)
    await settle_dead_letter(ack, stage, error_class)


async def send_dead_letter(
    emit: Emitter,
    stage: str,
    record: Consumed,
    error_class: ErrorClass,
    message: str,
    now: datetime,
    log: Any,
    dlq: str | None = None,
) -> Any:
    """Send the input, as it came, to its topic's .dlq (or dlq) with the reason; the broker's
    acknowledgement, for settle_dead_letter."""
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
        return await emit(
            dlq or dlq_name(record.topic), record.key, record.value or b"", letter.headers(record.headers)
        )
    except Exception:
        telemetry.DEAD_LETTER_WRITE_FAILURES.labels(stage).inc()  # see settle_dead_letter
        raise


async def settle_dead_letter(ack: Any, stage: str, error_class: ErrorClass) -> None:
    """Wait for a dead letter's acknowledgement; count it, or count the failure and re-raise."""
    try:
        await settle(ack)
    except Exception:
        # The broker refused the dead letter: counted, then the worker crashes and the record is
        # processed again after the restart (its offset was not committed).
        telemetry.DEAD_LETTER_WRITE_FAILURES.labels(stage).inc()
        raise
    telemetry.DEAD_LETTERS.labels(stage, error_class.value).inc()
