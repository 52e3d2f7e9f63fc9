"""What every stage shares: the context carrying the clock, the Dropped result, and the runner."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from streams.core import telemetry

# One record in this many feeds the per-stage histograms (itsm_pipeline_stage_seconds); a traced
# record always does.
TIMED_EVERY = 16


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
        # The labelled metric children, resolved once: .labels() costs about 2 us a call, and a
        # record passes up to nine stages.
        self._timers = tuple(telemetry.STAGE_SECONDS.labels(stage.name) for stage in self.stages)
        self._in = telemetry.RECORDS_IN.labels(name)
        self._runs = 0

    def _count_out(self, outcome: str) -> None:
        telemetry.labelled(telemetry.RECORDS_OUT, self.name, outcome).inc()

    def run(self, record: Any, ctx: Ctx) -> Any:
        """The final record, or the first Dropped a stage returned."""
        self._in.inc()
        # The record's span (made once by the runner) gets one event per stage, when it records.
        span = telemetry.current_span()
        traced = span.is_recording()
        self._runs += 1
        if not traced and self._runs % TIMED_EVERY:
            # Untimed: reading the clock twice and observing a histogram per stage cost more than
            # most stages themselves (the worker's profile); the stage histograms are fed by one
            # record in TIMED_EVERY, which keeps their quantiles.
            for stage in self.stages:
                record = stage(record, ctx)
                if isinstance(record, Dropped):
                    self._count_out(record.reason.value)
                    return record
            self._count_out("emitted")
            return record
        for stage, timer in zip(self.stages, self._timers, strict=True):
            started = time.perf_counter()
            record = stage(record, ctx)
            took = time.perf_counter() - started
            timer.observe(took)
            if traced:
                span.add_event(stage.name, {"seconds": took})
            if isinstance(record, Dropped):
                self._count_out(record.reason.value)
                if traced:
                    span.set_attribute("dropped", record.reason.value)
                return record
        self._count_out("emitted")
        return record
