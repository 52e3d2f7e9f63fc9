"""The alerts agent: reads alerts.raw as bytes, runs the alert pipeline, emits incident commands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from streams.core import telemetry
from streams.core.dlq import DeadLetter, ErrorClass, Headers
from streams.core.models import Alert, IncidentCommand
from streams.core.serde import AvroSerde, SerdeError
from streams.core.settings import Settings
from streams.core.topics import ALERTS_RAW, INCIDENT_COMMANDS, dlq_name
from streams.stages.base import Ctx, Dropped, Pipeline
from streams.stages.incident import AlertToIncidentStage

STAGE = "alerts"


class Emitter(Protocol):
    """Sends one record; the returned awaitable completes once the record is accepted for delivery."""

    def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> Awaitable[Any]: ...


def alert_pipeline() -> Pipeline:
    """The alert stages in their one declared order."""
    return Pipeline(STAGE, [AlertToIncidentStage()])


@dataclass
class AlertProcessor:
    """Everything the agent does per record, without Faust: decode, stages, encode, or dead-letter."""

    settings: Settings
    serde: AvroSerde
    emit: Emitter
    pipeline: Pipeline
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.commands_topic = self.settings.topic(INCIDENT_COMMANDS)
        self.dlq_topic = dlq_name(self.settings.topic(ALERTS_RAW))
        self.log = telemetry.get_logger("worker.alerts")

    async def handle(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Any] | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> str:
        """Process one raw record; returns 'emitted', a drop reason, or 'dead_lettered'."""
        headers = list(headers or ())
        ctx = Ctx(now=self.clock(), topic=topic, partition=partition, offset=offset)
        try:
            alert = self.serde.decode(value or b"", Alert)
            result = self.pipeline.run(alert, ctx)
            if isinstance(result, Dropped):
                return result.reason.value
            command: IncidentCommand = result
            out = self.serde.encode(command, self.commands_topic)
        except SerdeError as exc:
            await self._dead_letter(key, value, headers, ctx, ErrorClass(exc.error_class), str(exc))
            return "dead_lettered"
        except ValidationError as exc:
            await self._dead_letter(key, value, headers, ctx, ErrorClass.VALIDATION, str(exc))
            return "dead_lettered"
        # Keyed by correlation id so every command of one incident lands on one partition, in order.
        await self.emit(
            self.commands_topic,
            command.correlation_id.encode(),
            out,
            [(k, v) for k, v in headers if k in telemetry.TRACE_HEADERS],
        )
        return "emitted"

    async def _dead_letter(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        ctx: Ctx,
        error_class: ErrorClass,
        message: str,
    ) -> None:
        letter = DeadLetter(
            ctx.topic, ctx.partition, ctx.offset, STAGE, error_class, message, first_failed_at=ctx.now
        )
        self.log.warning(
            "dead_letter",
            topic=ctx.topic,
            partition=ctx.partition,
            offset=ctx.offset,
            error_class=error_class.value,
            reason=message[:300],
        )
        telemetry.DEAD_LETTERS.labels(STAGE, error_class.value).inc()
        await self.emit(self.dlq_topic, key, value or b"", letter.headers(headers))
