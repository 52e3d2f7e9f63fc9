"""What every stage shares: the context carrying the clock, the Dropped result, and the runner."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from streams.core import telemetry


class DropReason(StrEnum):
    """Closed set of reasons a stage keeps a record from going on (bounded metric labels)."""

    DEDUPLICATED = "deduplicated"
    SUPPRESSED = "suppressed"
    INHIBITED = "inhibited"
    GROUPED = "grouped"
    STALE = "stale"


@dataclass(frozen=True)
class Ctx:
    """Per-record context: the injected clock and where the record came from."""

    now: datetime
    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class Dropped:
    """A stage's decision that the record goes no further, with the reason kept for audit."""

    reason: DropReason
    detail: str = ""


class Stage(Protocol):
    """One step of a pipeline: pure given its inputs, state protocols and ctx.now."""

    name: str

    def __call__(self, record: Any, ctx: Ctx, /) -> Any: ...


class Pipeline:
    """Runs stages in their declared order, doing the cross-cutting work (metrics) once here."""

    def __init__(self, name: str, stages: Sequence[Stage]) -> None:
        self.name = name
        self.stages = tuple(stages)

    def run(self, record: Any, ctx: Ctx) -> Any:
        """The final record, or the first Dropped a stage returned."""
        telemetry.RECORDS_IN.labels(self.name).inc()
        # The record's span (made once by the runner) gets one event per stage, when it records.
        span = telemetry.current_span()
        traced = span.is_recording()
        for stage in self.stages:
            started = time.perf_counter()
            record = stage(record, ctx)
            took = time.perf_counter() - started
            telemetry.STAGE_SECONDS.labels(stage.name).observe(took)
            if traced:
                span.add_event(stage.name, {"seconds": took})
            if isinstance(record, Dropped):
                telemetry.RECORDS_OUT.labels(self.name, record.reason.value).inc()
                if traced:
                    span.set_attribute("dropped", record.reason.value)
                return record
        telemetry.RECORDS_OUT.labels(self.name, "emitted").inc()
        return record
